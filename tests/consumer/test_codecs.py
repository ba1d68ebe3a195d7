"""Events from a librdkafka producer (the usual non-Python client) in every compression
codec it offers: all stored and acked. A codec whose library is missing stops the service
with its own exit code and a line that says so, storing and committing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.support.consumer_fixtures import PARTITIONS, Topics
from tests.support.service_helpers import acks_cover, committed, dump, event

pytestmark = pytest.mark.kafka


def produce_with_librdkafka(topics: Topics, codec: str, count: int) -> list[tuple[int, int]]:
    import json

    positions: list[tuple[int, int]] = []
    errors: list[object] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            errors.append(error)
        else:
            positions.append((message.partition(), message.offset()))  # type: ignore[attr-defined]

    producer = Producer(
        {"bootstrap.servers": topics.bootstrap, "compression.type": codec, "linger.ms": 20, "acks": "all"}
    )
    for i in range(count):
        producer.produce(topics.signals, json.dumps(event(i)).encode(), key=str(i).encode(), on_delivery=delivered)
    assert producer.flush(30) == 0 and errors == []
    return positions


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec_a_librdkafka_producer_uses_is_read(topics: Topics, tmp_path: Path, codec: str) -> None:
    positions = produce_with_librdkafka(topics, codec, 500)
    service = topics.service(tmp_path / "wal")
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    assert sorted(seq for _, seq in acks.values()) == list(range(1, 501))


# librdkafka decompresses every codec itself: no library of ours can be missing there.
@pytest.mark.backends("kafka-python")
def test_a_missing_codec_library_exits_6_saying_which(topics: Topics, tmp_path: Path) -> None:
    produce_with_librdkafka(topics, "lz4", 200)
    service = topics.service(tmp_path / "wal", hooked=True, env={"TIDAL_TEST_HIDE_MODULES": "lz4,lz4.frame"})
    assert service.process.wait(timeout=60) == 6, service.log()
    service.kill()
    log = service.log()
    assert "lz4" in log.lower() and "cannot read the input" in log and "Traceback" not in log
    assert dump(tmp_path / "wal") == []
    assert all(v is None for v in committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS).values())
