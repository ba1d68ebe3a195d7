"""Three instances on one group, SIGKILLed at random while events flow, some restarted
within the session timeout (static membership: they keep their partitions) and some
only after it (their partitions move, the handoff runs). At the end: every offset acked,
no offset acked with two homes, the live events over all WALs exactly the distinct homes
(every orphan voided), and DurableProducer never resolved to a voided seq.

Bounded in `make test` (20,000 events, 8 kills, 3 of them past the session timeout, one group
mixing both backends); ``TIDAL_SOAK=1`` (``make soak``): 150,000 events, 12 kills, 4 past the
session timeout, and also a group of each backend alone and a confluent group with
``delivery = "transactional"`` (acks then read as committed, as its readers do).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from consumer.client import DurableProducer
from tests.support.consumer_fixtures import Topics
from tests.support.service_helpers import (
    Service,
    applied_counts,
    committed,
    consumer_options,
    dump,
    end_offsets,
    event,
    homes_of,
    metric_totals,
    read_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.soak]

SOAK = os.environ.get("TIDAL_SOAK") == "1"
EVENTS = 150_000 if SOAK else 20_000
KILLS = 12 if SOAK else 8
LATE_RESTARTS = 4 if SOAK else 3
PARTITIONS = 6
SESSION_S = 6
CLIENT_EVENTS = 600  # of them sent through DurableProducer
PRODUCE_S = 120 if SOAK else 30  # the stream is spread over the kills
SEED = int(os.environ.get("TIDAL_CHAOS_SEED", "7"))


# "mixed": each (re)start picks its backend at random, so one group holds both clients and
# a WAL moves between them: acks, commit marks and handoffs must agree across backends.
# Bounded (make test): the mixed group only, which starts each instance on either backend;
# make soak also runs a group of each backend alone.
@pytest.mark.backends(*(("kafka-python", "confluent", "mixed", "transactional") if SOAK else ("mixed",)))
def test_three_instances_killed_at_random_keep_one_home_per_event(
    kafka_bootstrap: str, tmp_path: Path, kafka_admin: KafkaAdminClient, backend: str
) -> None:
    rng = random.Random(SEED)
    suffix = f"{time.monotonic_ns()}"
    topics = Topics(
        kafka_bootstrap, f"chaos-{suffix}", f"chaos-acks-{suffix}", f"chaos-dlq-{suffix}", f"chaos-group-{suffix}"
    )
    kafka_admin.create_topics(
        [NewTopic(topics.signals, PARTITIONS, 1), NewTopic(topics.reply, PARTITIONS, 1), NewTopic(topics.dlq, 1, 1)]
    )
    configs = {}
    for name in ("kafka-python", "confluent", "transactional"):
        client = "confluent" if name == "transactional" else name
        configs[name] = tmp_path / f"consumer-{name}.toml"
        configs[name].write_text(
            f'max_poll_records = 2000\nbackend = "{client}"\n'
            + ('delivery = "transactional"\n' if name == "transactional" else "")
            + consumer_options(client, session_timeout_ms=SESSION_S * 1000, heartbeat_interval_ms=1000)
        )
    wal_dirs = [tmp_path / f"wal-{name}" for name in "abc"]

    def start(wal_dir: Path, crash: tuple[str, int] | None = None) -> Service:
        """``crash``: (crash point, batch number): the instance SIGKILLs itself there."""
        chosen = rng.choice(["confluent", "kafka-python"]) if backend == "mixed" else backend
        extra = ["--config", str(configs[chosen])]
        env = {"TIDAL_BACKEND": "confluent" if chosen == "transactional" else chosen}
        if crash is None:
            return topics.service(wal_dir, extra=extra, env=env)
        return topics.service(wal_dir, extra=extra, hooked=True, env={**env, crash[0]: str(crash[1])})

    instances = [start(wal_dir) for wal_dir in wal_dirs]
    for instance in instances:
        instance.wait_for_log("consuming")

    produced = threading.Event()
    durable = DurableProducer(kafka_bootstrap, topics.signals, topics.reply, ack_timeout=600)
    client_futures: list = []

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        for i in range(EVENTS):
            if i % (EVENTS // CLIENT_EVENTS) == 0:
                client_futures.append(durable.send(event(i, entity_id=i)))
            else:
                producer.send(topics.signals, key=str(i).encode(), value=event_json(i))
            if i % 500 == 0:
                time.sleep(PRODUCE_S / (EVENTS / 500))
        producer.flush()
        producer.close()
        durable.flush()
        produced.set()

    producer_thread = threading.Thread(target=produce)
    producer_thread.start()
    # Half the restarts carry a crash point: the instance SIGKILLs itself between a batch's
    # fsync and its acks, or between its delivered acks and its commit (the windows a
    # random kill rarely hits), and stays down until the loop comes back to it.
    late = set(rng.sample(range(KILLS), LATE_RESTARTS))
    crash_points = ("TIDAL_TEST_CRASH_AFTER_FSYNC", "TIDAL_TEST_CRASH_BEFORE_COMMIT")
    self_killed = 0
    hooked = [False] * 3
    for kill in range(KILLS):
        time.sleep(rng.uniform(0.5, 2.5))
        index = rng.randrange(3)
        self_killed += instances[index].process.poll() is not None
        instances[index].kill()
        if kill in late:
            time.sleep(SESSION_S + 1.5)  # its partitions move to the others meanwhile
        crash = (rng.choice(crash_points), rng.randint(1, 8)) if rng.random() < 0.5 else None
        instances[index] = start(wal_dirs[index], crash)
        hooked[index] = crash is not None
    producer_thread.join(timeout=600)
    assert produced.is_set()

    ends = end_offsets(kafka_bootstrap, topics.signals, PARTITIONS)
    assert sum(ends.values()) == EVENTS
    deadline = time.monotonic() + 300
    while committed(kafka_bootstrap, topics.group, topics.signals, PARTITIONS) != ends:
        assert time.monotonic() < deadline, "the group never committed everything"
        for index, instance in enumerate(instances):
            if instance.process.poll() is not None:  # down at a crash point: back, without one
                self_killed += 1
                instance.kill()
                instances[index] = start(wal_dirs[index])
                hooked[index] = False
        time.sleep(0.5)
    client_results = [future.result(timeout=120) for future in client_futures]
    durable.close()
    # One more round of assignments with every ack published: each instance sweeps its WAL.
    for index, instance in enumerate(instances):
        if hooked[index]:
            instance.kill()  # its crash point may still be ahead of it
        else:
            assert instance.stop() == 0, instance.log()
    instances = [start(wal_dir) for wal_dir in wal_dirs]
    for instance in instances:
        instance.wait_for_log("partitions assigned: \\S")
    for instance in instances:
        assert instance.stop() == 0, instance.log()

    positions = {(p, o) for p, end in ends.items() for o in range(end)}
    homes = homes_of(
        read_topic(
            kafka_bootstrap,
            topics.reply,
            until=lambda m: positions <= set(homes_of(m)),
            timeout=120,
            committed_only=backend == "transactional",
        )
    )
    assert {p: h for p, h in homes.items() if len(h) > 1} == {}, "offsets acked with two homes"
    live: set[tuple[str, int]] = set()
    voided: set[tuple[str, int]] = set()
    for wal_dir in wal_dirs:
        wal_id = (wal_dir / "WAL_ID").read_text().strip()
        for row in dump(wal_dir):
            (voided if row["voided"] else live).add((wal_id, row["seq"]))
    distinct_homes = {home for position in positions for home in homes[position]}
    assert live == distinct_homes  # every event live exactly once, every orphan voided
    assert len(live) == EVENTS  # no event was a duplicate of another
    for result in client_results:
        assert (result.wal_id, result.seq) in live and not result.duplicate
    # The stores agree with the WALs: each event (entity i) applied in exactly one of them,
    # once; every orphan removed again.
    stored: dict[tuple[int, int], int] = {}
    for wal_dir in wal_dirs:
        for key, count in applied_counts(wal_dir / "store").items():
            stored[key] = stored.get(key, 0) + count
    assert len(stored) == EVENTS and set(stored.values()) == {1}
    logs = [log.read_text(errors="replace") for log in tmp_path.glob("wal-*.log")]
    again = sum(metric_totals(log).get("redeliveries", 0) for log in logs)
    print(
        f"\n{EVENTS} events, {KILLS} kills ({LATE_RESTARTS} past the session timeout; {self_killed} of them at "
        f"a crash point), seed {SEED}: "
        f"{again:.0f} offsets consumed again and acked with their first home, {len(voided)} orphan(s) "
        "voided, every offset one home"
    )


def event_json(i: int) -> bytes:
    import json

    return json.dumps(event(i, entity_id=i)).encode()
