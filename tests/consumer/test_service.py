"""The service end to end against the real broker (a real `tidal-consumer run` process)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.consumer_fixtures import PARTITIONS, Topics
from tests.support.service_helpers import (
    AckWatcher,
    Service,
    acks_cover,
    committed,
    consumer_options,
    dump,
    end_offsets,
    event,
    metric_totals,
    produce,
    read_topic,
)

pytestmark = pytest.mark.kafka


def assert_stored_once(rows: list[dict], positions: list[tuple[int, int]], topic: str) -> None:
    stored = Counter((r["source"]["partition"], r["source"]["offset"]) for r in rows if r["source"]["topic"] == topic)
    assert set(stored) == set(positions)
    assert max(stored.values()) == 1


def test_happy_path_every_offset_acked_stored_and_committed(topics: Topics, tmp_path: Path) -> None:
    n = 2000
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(n)])
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    assert all(acks[p][0] == "acked" for p in positions)
    rows = dump(tmp_path / "wal")
    assert [r["seq"] for r in rows] == list(range(1, n + 1))
    by_source = {(r["source"]["partition"], r["source"]["offset"]): r for r in rows}
    for position, i in zip(positions, range(n)):
        row = by_source[position]
        assert row["seq"] == acks[position][1]  # the ack names the durable seq of this very event
        assert row["entity_id"] == i
    ends = end_offsets(topics.bootstrap, topics.signals, PARTITIONS)
    assert committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS) == ends
    totals = metric_totals(service.log())  # the progress lines account for every event
    assert (totals["stored"], totals["rejected"], totals["duplicates"]) == (n, 0, 0)
    assert totals["events/s"] > 0


def test_invalid_input_goes_to_the_dlq_with_reasons_and_nothing_is_lost(topics: Topics, tmp_path: Path) -> None:
    bad = {
        b"not json at all": "not valid JSON",
        json.dumps(event(1, weight=float("nan"))).encode(): "weight",  # json.dumps writes NaN
        json.dumps(event(2, entity_id=-5)).encode(): "entity_id",
        json.dumps(event(3, entity_id="12")).encode(): "entity_id",
        json.dumps(event(4, signal_type="teleport")).encode(): "unknown signal type 'teleport'",
        json.dumps(event(5, event_id="x" * 300)).encode(): "event_id",
        json.dumps({**event(6), "padding": "p" * 5000}).encode(): "over the 4096-byte limit",
    }
    good = [event(100 + i) for i in range(50)]
    values: list[object] = [*bad, *good]
    positions = produce(topics.bootstrap, topics.signals, values)
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    dlq = read_topic(topics.bootstrap, topics.dlq, until=lambda m: len(m) >= len(bad))
    assert service.stop() == 0
    assert len(dlq) == len(bad)
    by_value = {m.value: dict(m.headers) for m in dlq}
    for raw, expected in bad.items():
        headers = by_value[raw]  # the original bytes, unchanged
        assert expected in headers["tidal.reason"].decode()
        assert headers["tidal.source.topic"].decode() == topics.signals
    for position, raw in zip(positions, values):
        kind, detail = acks[position]
        if isinstance(raw, bytes):
            assert kind == "rejected" and bad[raw] in detail
        else:
            assert kind == "acked"
    rows = dump(tmp_path / "wal")
    assert len(rows) == len(good)
    dlq_positions = {
        (int(dict(m.headers)["tidal.source.partition"]), int(dict(m.headers)["tidal.source.offset"])) for m in dlq
    }
    stored_positions = {(r["source"]["partition"], r["source"]["offset"]) for r in rows}
    assert dlq_positions | stored_positions == set(positions)  # every consumed record: WAL or DLQ
    assert committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS) == end_offsets(
        topics.bootstrap, topics.signals, PARTITIONS
    )


def test_producer_duplicates_are_stored_once_and_acked_with_the_original_seq(topics: Topics, tmp_path: Path) -> None:
    retried = event(7, event_id="order-7-view")
    same_content = event(8)
    values = [retried, same_content, event(9), {**retried, "weight": 99.0}, same_content]
    positions = produce(topics.bootstrap, topics.signals, values, key=b"one-producer")  # retries keep their key
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0
    assert len(dump(tmp_path / "wal")) == 3
    assert acks[positions[3]] == ("duplicate", acks[positions[0]][1])
    assert acks[positions[4]] == ("duplicate", acks[positions[1]][1])


def test_stop_and_restart_loses_nothing_and_stores_nothing_twice(topics: Topics, tmp_path: Path) -> None:
    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(500)])
    service = topics.service(tmp_path / "wal")
    acks_cover(topics.bootstrap, topics.reply, first)
    assert service.stop() == 0
    second = produce(topics.bootstrap, topics.signals, [event(i) for i in range(500, 1200)])
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, first + second)
    assert service.stop() == 0
    rows = dump(tmp_path / "wal")
    assert [r["seq"] for r in rows] == list(range(1, 1201))
    assert_stored_once(rows, first + second, topics.signals)
    assert sorted(acks[p][1] for p in first + second) == list(range(1, 1201))


def test_sigkill_after_fsync_before_commit_then_restart_acks_everything_stores_once(
    topics: Topics, tmp_path: Path
) -> None:
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(3000)])
    crashing = topics.service(tmp_path / "wal", env={"TIDAL_TEST_CRASH_AFTER_FSYNC": "1"}, hooked=True)
    assert crashing.process.wait(timeout=120) == -9, crashing.log()
    crashing.kill()
    stored_before = dump(tmp_path / "wal")
    assert stored_before, "the first batch was fsynced before the crash"
    assert all(v is None for v in committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS).values())
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0
    rows = dump(tmp_path / "wal")
    assert_stored_once(rows, positions, topics.signals)
    assert [r["seq"] for r in rows] == list(range(1, 3001))
    # the batch stored before the crash is acked (again) with its original seqs
    for row in stored_before:
        assert acks[(row["source"]["partition"], row["source"]["offset"])] == ("acked", row["seq"])
    totals = metric_totals(service.log())  # the restart recognised exactly the batch stored before
    assert (totals["redeliveries"], totals["stored"]) == (len(stored_before), 3000 - len(stored_before))


def test_two_instances_in_one_group_with_a_rebalance_mid_stream_lose_nothing(topics: Topics, tmp_path: Path) -> None:
    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(1500)])
    a = topics.service(tmp_path / "wal-a")
    a.wait_for_log(r"partitions assigned: \S")
    later: list[tuple[int, int]] = []
    producer = threading.Thread(
        target=lambda: later.extend(produce(topics.bootstrap, topics.signals, [event(i) for i in range(1500, 4500)]))
    )
    producer.start()
    b = topics.service(tmp_path / "wal-b")  # joins: the group rebalances while events flow
    b.wait_for_log(r"partitions assigned: \S")
    producer.join()
    positions = first + later
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert a.stop() == 0 and b.stop() == 0
    assert "partitions revoked" in a.log()
    rows_a, rows_b = dump(tmp_path / "wal-a"), dump(tmp_path / "wal-b")
    stored = Counter((r["source"]["partition"], r["source"]["offset"]) for r in rows_a + rows_b)
    assert set(stored) == set(positions)  # nothing lost
    # the revocation drained A's batches in flight (committed), so B stored none of them again
    assert [p for p, count in stored.items() if count > 1] == []
    assert all(kind == "acked" for kind, _ in (acks[p] for p in positions))
    for rows in (rows_a, rows_b):  # each WAL: gap-free seqs, no record twice
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        assert len({(r["source"]["partition"], r["source"]["offset"]) for r in rows}) == len(rows)


def test_bad_config_fails_at_start_naming_the_field(topics: Topics, tmp_path: Path) -> None:
    service = topics.service(tmp_path / "wal", env={"TIDAL_WAL__BATCH_SIZE": "0"})
    assert service.process.wait(timeout=30) == 1
    service.kill()
    assert "wal.batch_size" in service.log() and "Traceback" not in service.log()


def test_second_instance_on_the_same_wal_dir_is_refused(topics: Topics, tmp_path: Path) -> None:
    first = topics.service(tmp_path / "wal")
    first.wait_for_log("consuming")
    second = topics.service(tmp_path / "wal")
    assert second.process.wait(timeout=30) == 2
    second.kill()
    assert "in use by another process" in second.log()
    assert first.stop() == 0


def test_broker_unreachable_retries_with_a_log_line_and_stops_cleanly(tmp_path: Path) -> None:
    service = Service("127.0.0.1:1", "signals", tmp_path / "wal", group="g", reply="r", dlq="d")
    service.wait_for_log("cannot reach Kafka at 127.0.0.1:1")
    assert service.stop() == 0


# The same options in each backend's own names.
CLIENT_OPTIONS = {
    "kafka-python": (
        '[kafka]\nclient_id = "tidal-custom"\n'
        "[kafka.consumer]\nsession_timeout_ms = 12000\nmax_partition_fetch_bytes = 2097152\n"
        'isolation_level = "read_committed"\n[kafka.producer]\nlinger_ms = 1\n'
    ),
    "confluent": (
        '[kafka]\n"client.id" = "tidal-custom"\n'
        '[kafka.consumer]\n"session.timeout.ms" = 12000\n"max.partition.fetch.bytes" = 2097152\n'
        '"isolation.level" = "read_committed"\n[kafka.producer]\n"linger.ms" = 1\n'
    ),
}


def test_per_client_kafka_options_reach_their_client_and_the_service_runs(
    topics: Topics, tmp_path: Path, backend: str
) -> None:
    config = tmp_path / "consumer.toml"
    config.write_text(CLIENT_OPTIONS[backend])
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    service = topics.service(tmp_path / "wal", extra=["--config", str(config)])
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    assert sorted(seq for _, seq in acks.values()) == list(range(1, 301))


def test_an_instance_sigkilled_and_restarted_on_its_wal_gets_its_partitions_back_at_once(
    topics: Topics, tmp_path: Path
) -> None:
    """Static membership (group.instance.id from the WAL id): the restarted member takes its
    place in the group without waiting for the old one's session to expire. The session is
    30 s here, so a dynamic member (which waits for it: 30-31 s measured) and a static one
    (1.5-5 s) are far apart whatever the machine's load."""
    config = tmp_path / "session.toml"
    config.write_text(consumer_options(session_timeout_ms=30_000, heartbeat_interval_ms=3_000))
    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(200)])
    service = topics.service(tmp_path / "wal", extra=["--config", str(config)])
    acks_cover(topics.bootstrap, topics.reply, first)
    service.kill()  # SIGKILL: no LeaveGroup, the broker still counts the old member in
    second = produce(topics.bootstrap, topics.signals, [event(i) for i in range(200, 400)])
    watcher = AckWatcher(topics.bootstrap, topics.reply)
    started = time.monotonic()
    service = topics.service(tmp_path / "wal", extra=["--config", str(config)])
    first_ack = watcher.wait_for_any(set(second), timeout=90) - started
    print(f"\nrestart -> first new ack: {first_ack:.2f} s (session timeout 30 s)")
    acks = acks_cover(topics.bootstrap, topics.reply, first + second)
    assert service.stop() == 0
    assert first_ack < 15.0, f"the restarted instance waited {first_ack:.1f} s: it was not a static member"
    assert sorted(seq for _, seq in acks.values()) == list(range(1, 401))
