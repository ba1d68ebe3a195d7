"""Poison messages against the real broker: nothing a producer sends may stop a partition.
Each used to make the service exit 4 at every restart, for ever."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest
from consumer_fixtures import PARTITIONS, Topics
from service_helpers import acks_cover, committed, end_offsets, event, produce, read_topic

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
        p: o or None for p, o in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items()}


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
