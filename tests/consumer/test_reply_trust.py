"""Hostile and stray messages on the reply topic, against the real broker and service
(docs/acks.md, what is believed): nothing they say makes the service lose an event."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from pathlib import Path

import pytest
from kafka import KafkaProducer

from consumer.protocol.acks import Ack, parse_ack
from tests.support.consumer_fixtures import Topics
from tests.support.service_helpers import Service, dump, event, produce, read_topic

pytestmark = pytest.mark.kafka


def send_raw(bootstrap: str, topic: str, key: bytes, values: list[dict]) -> set[tuple[int, int]]:
    """Where the messages landed: (partition, offset) each."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    sent = [producer.send(topic, key=key, value=json.dumps(value).encode()) for value in values]
    producer.flush()
    landed = {(meta.partition, meta.offset) for meta in (future.get(timeout=30) for future in sent)}
    producer.close()
    return landed


def forged(wal: str, topic: str, partition: int, acked: list[list[int]]) -> dict:
    return {
        "v": 1,
        "wal_id": wal,
        "topic": topic,
        "partition": partition,
        "acked": acked,
        "duplicates": [],
        "rejected": [],
    }


def acked_by(
    bootstrap: str,
    reply: str,
    wal: str,
    positions: list[tuple[int, int]],
    forgeries: Collection[tuple[int, int]] = (),
) -> dict[tuple[int, int], int]:
    """(partition, offset) -> seq, from the acks naming ``wal`` (other messages skipped, and
    the ``forgeries``: the test's own messages at those reply-topic positions, which may name
    ``wal`` and the very offsets waited for, and would otherwise end the wait before the
    service has acked them)."""

    def index(messages: list) -> dict[tuple[int, int], int]:
        found: dict[tuple[int, int], int] = {}
        for message in messages:
            if (message.partition, message.offset) in forgeries:
                continue
            ack = parse_ack(message.value)
            if isinstance(ack, Ack) and ack.wal_id == wal:
                for first, last, seq in ack.acked:
                    found.update({(ack.partition, o): seq + o - first for o in range(first, last + 1)})
        return found

    return index(read_topic(bootstrap, reply, until=lambda m: set(positions) <= set(index(m))))


def test_forged_acks_on_the_reply_topic_lose_no_event_and_stop_nothing(topics: Topics, tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(10)], key=b"one")
    service = topics.service(wal_dir)
    wal_id = service.wait_for_log(r"into WAL \S+ \((\w+)\)").group(1)
    acked_by(topics.bootstrap, topics.reply, wal_id, first)
    assert service.stop() == 0, service.log()
    partition, end = first[0][0], first[-1][1] + 1
    # With the service stopped, on the partition's ack key: a home in a WAL the group never
    # committed with; this WAL's own id with a seq it never reached; a run of 10^12 offsets;
    # this WAL's seq 1 for offsets that do not exist yet when the service comes back.
    forgeries = send_raw(
        topics.bootstrap,
        topics.reply,
        f"{topics.signals}:{partition}".encode(),
        [
            forged("f0f0f0f0f0f0f0f0", topics.signals, partition, [[end, end + 9, 5000]]),
            forged(wal_id, topics.signals, partition, [[end + 10, end + 19, 10**9]]),
            forged(wal_id, topics.signals, partition, [[end + 20, end + 20 + 10**12, 1]]),
            forged(wal_id, topics.signals, partition, [[end + 30, end + 39, 1]]),
        ],
    )
    second = produce(topics.bootstrap, topics.signals, [event(i) for i in range(10, 40)], key=b"one")
    assert second[0] == (partition, end)
    service = topics.service(wal_dir)
    acked_by(topics.bootstrap, topics.reply, wal_id, second, forgeries)
    third = produce(topics.bootstrap, topics.signals, [event(i) for i in range(40, 50)], key=b"one")
    assert third[0] == (partition, end + 30)
    seqs = acked_by(topics.bootstrap, topics.reply, wal_id, first + second + third, forgeries)
    assert service.stop() == 0, service.log()
    rows = dump(wal_dir)
    assert [(r["source"]["partition"], r["source"]["offset"]) for r in rows] == first + second + third
    assert [r["entity_id"] for r in rows] == list(range(50))  # every event stored, once, in order
    assert {(r["source"]["partition"], r["source"]["offset"]): r["seq"] for r in rows} == seqs
    log = service.log()
    assert "names WAL f0f0f0f0f0f0f0f0, which no commit of this partition names" in log
    assert "ERROR" in log and "names this WAL's seq 1000000009, past its last seq 10" in log
    assert f"answers for offset {end + 39}, at or past the partition's end" in log
    assert "Traceback" not in log


@pytest.mark.backends("kafka-python")
def test_a_new_group_on_a_reply_topic_an_earlier_group_wrote_stores_every_event(topics: Topics, tmp_path: Path) -> None:
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    earlier = topics.service(tmp_path / "wal-a")
    earlier_wal = earlier.wait_for_log(r"into WAL \S+ \((\w+)\)").group(1)
    acked_by(topics.bootstrap, topics.reply, earlier_wal, positions)
    assert earlier.stop() == 0
    group = f"redeploy-{uuid.uuid4().hex[:8]}"  # the same topics under a new group id, fresh WALs
    later = Service(
        topics.bootstrap, topics.signals, tmp_path / "wal-b", group=group, reply=topics.reply, dlq=topics.dlq
    )
    later_wal = later.wait_for_log(r"into WAL \S+ \((\w+)\)").group(1)
    acked_by(topics.bootstrap, topics.reply, later_wal, positions)
    assert later.stop() == 0, later.log()
    assert len(dump(tmp_path / "wal-b")) == 300  # stored in the new group's WAL, not homed in the old one
    assert f"names WAL {earlier_wal}, which no commit of this partition names" in later.log()
