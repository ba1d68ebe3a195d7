"""Poison messages against the real broker: nothing a producer sends may stop a partition.
Each used to make the service exit 4 at every restart, for ever."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest

from tests.support.consumer_fixtures import PARTITIONS, Topics
from tests.support.service_helpers import acks_cover, committed, end_offsets, event, produce, read_topic

pytestmark = pytest.mark.kafka


def test_a_value_too_large_to_copy_whole_goes_to_the_dlq_truncated(topics: Topics, tmp_path: Path) -> None:
    huge = b'{"entity_id": 1, "padding": "' + b"p" * 1_048_000 + b'"}'  # the input topic takes it
    positions = produce(topics.bootstrap, topics.signals, [huge, *[event(i) for i in range(20)]], key=b"one")
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    [letter] = read_topic(topics.bootstrap, topics.dlq, until=lambda m: len(m) >= 1)
    assert service.stop() == 0, service.log()
    headers = dict(letter.headers)
    assert acks[positions[0]][0] == "rejected"
    assert headers["tidal.truncated"] == str(len(huge)).encode()
    assert headers["tidal.original.blake3"] == blake3.blake3(huge).hexdigest().encode()
    assert huge.startswith(letter.value)
    assert committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS) == {
        p: o or None for p, o in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items()
    }


def test_hundreds_of_long_reasons_in_one_batch_are_acked_not_fatal(topics: Topics, tmp_path: Path) -> None:
    emoji = [json.dumps(event(i, signal_type="😀" * 1000), ensure_ascii=False).encode() for i in range(300)]
    positions = produce(topics.bootstrap, topics.signals, [*emoji, *[event(i) for i in range(20)]], key=b"one")
    config = tmp_path / "consumer.toml"
    config.write_text("max_message_bytes = 8192\n")
    service = topics.service(tmp_path / "wal", extra=["--config", str(config)])
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    kinds = [acks[p][0] for p in positions]
    assert kinds == ["rejected"] * 300 + ["acked"] * 20
    assert all(len(acks[p][1]) < 300 for p in positions[:300])  # bounded reasons


def test_hostile_messages_of_every_kind_mixed_with_valid_ones(topics: Topics, tmp_path: Path) -> None:
    import random

    from kafka import KafkaProducer

    rng = random.Random(5)
    hostile = [
        None,  # a tombstone
        b"",
        b"\xff\xfe\x00\x01 not utf-8",
        b"{" * 3000,  # deep nesting
        b'{"entity_id": 1}',
        json.dumps(event(1, weight=float("nan"))).encode(),
        json.dumps(event(1, entity_id=2**64)).encode(),
        json.dumps(event(1, signal_type="😀" * 1000), ensure_ascii=False).encode(),
        json.dumps(event(1, event_id="")).encode(),
        json.dumps(event(1, timestamp_nanos="soon")).encode(),
        b"p" * 600_000,
        b"[1, 2, 3]",
    ]
    valid = [event(100_000 + i) for i in range(2000)]
    mixed = [("valid", v) for v in valid] + [("hostile", rng.choice(hostile)) for _ in range(500)]
    rng.shuffle(mixed)
    producer = KafkaProducer(bootstrap_servers=topics.bootstrap, acks="all", linger_ms=5)
    futures = []
    for i, (kind, value) in enumerate(mixed):
        raw = json.dumps(value).encode() if kind == "valid" else value
        headers = [("tidal.reason", b"spoofed")] if kind == "hostile" and i % 2 else []
        futures.append((kind, producer.send(topics.signals, key=str(i).encode(), value=raw, headers=headers)))
    producer.flush()
    positions = [(kind, (f.get(timeout=30).partition, f.get(timeout=30).offset)) for kind, f in futures]
    producer.close()
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, [p for _, p in positions])
    dlq = read_topic(topics.bootstrap, topics.dlq, until=lambda m: len(m) >= 500)
    assert service.stop() == 0, service.log()
    assert all(acks[p][0] == ("acked" if kind == "valid" else "rejected") for kind, p in positions)
    assert sorted(seq for kind, p in positions if kind == "valid" for seq in [acks[p][1]]) == list(range(1, 2001))
    assert len(dlq) == 500
    assert all(dict(m.headers)["tidal.reason"] != b"spoofed" for m in dlq)
    assert committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS) == {
        p: o or None for p, o in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items()
    }


def test_a_lower_producer_request_limit_is_respected_by_dead_letters(
    topics: Topics, tmp_path: Path, backend: str
) -> None:
    big = b"q" * 600_000
    positions = produce(topics.bootstrap, topics.signals, [big, event(1)], key=b"one")
    config = tmp_path / "consumer.toml"
    limit = "max_request_size" if backend == "kafka-python" else '"message.max.bytes"'
    config.write_text(f"[kafka.producer]\n{limit} = 300000\n")
    service = topics.service(tmp_path / "wal", extra=["--config", str(config)])
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    [letter] = read_topic(topics.bootstrap, topics.dlq, until=lambda m: len(m) >= 1)
    assert service.stop() == 0, service.log()
    assert acks[positions[0]][0] == "rejected" and acks[positions[1]][0] == "acked"
    assert len(letter.value) < 300_000 and dict(letter.headers)["tidal.truncated"] == b"600000"
