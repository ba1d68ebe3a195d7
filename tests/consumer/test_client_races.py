"""DurableProducer's ack matching without a broker: a scripted transport stands in for the
Kafka client (the order of callbacks and acks is the test's to choose). The broker-backed
tests are in test_client.py; these pin the races a real broker makes rare."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from consumer.client import DurableProducer, DurableResult
from consumer.kafka import backends
from consumer.kafka.transport import Failed, Sent
from consumer.protocol.acks import Ack


class ScriptedTransport:
    """Records each send's callbacks; ``read`` returns what the test queued."""

    made: ClassVar[list[ScriptedTransport]] = []

    def __init__(self, _backend: str, _servers: str | list[str], _reply_topic: str, _options: dict[str, Any]) -> None:
        self.sends: list[tuple[bytes, Sent, Failed]] = []
        self.replies: queue.Queue[bytes] = queue.Queue()
        ScriptedTransport.made.append(self)

    def send(self, topic: str, key: bytes, value: bytes, on_sent: Sent, on_failed: Failed) -> None:
        self.sends.append((key, on_sent, on_failed))

    def read(self, timeout_s: float) -> list[bytes | None]:
        try:
            return [self.replies.get(timeout=timeout_s)]
        except queue.Empty:
            return []

    def flush(self, timeout: float | None) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DurableProducer, ScriptedTransport]]:
    monkeypatch.setattr(backends, "open_transport", ScriptedTransport)
    made = DurableProducer("unused:9092", "signals", "signals.acks", ack_timeout=10)
    yield made, ScriptedTransport.made[-1]
    made.close()


def ack(partition: int, offset: int, seq: int, wal: str = "w") -> bytes:
    return Ack(wal, "signals", partition, [(offset, offset, seq)], [], []).encode()


def await_read(made: DurableProducer, partition: int, offset: int) -> None:
    """Until the reader thread has taken an ack covering ``offset`` of ``partition``."""
    deadline = time.monotonic() + 10
    while made._highest.get(("signals", partition), -1) < offset:  # the race path keys on it
        assert time.monotonic() < deadline, "the reader never took the ack"
        time.sleep(0.001)


def test_racing_acks_for_one_offset_on_two_partitions_resolve_each_its_own(
    producer: tuple[DurableProducer, ScriptedTransport],
) -> None:
    made, link = producer
    first = made.send({"entity_id": 1, "signal_type": "view", "weight": 1.0, "timestamp_nanos": 1})
    second = made.send({"entity_id": 2, "signal_type": "view", "weight": 1.0, "timestamp_nanos": 2})
    (_, first_sent, _), (_, second_sent, _) = link.sends
    # Offset 5 on partition 1: its ack arrives before the send's callback (the recent-acks path).
    link.replies.put(ack(1, 5, 71))
    await_read(made, 1, 5)
    # Offset 5 on partition 0: the callback first, then the ack (the pending path).
    first_sent("signals", 0, 5)
    second_sent("signals", 1, 5)
    link.replies.put(ack(0, 5, 42))
    assert first.result(timeout=10) == DurableResult("w", 42, False, 0, 5)
    assert second.result(timeout=10) == DurableResult("w", 71, False, 1, 5)


def test_an_ack_for_another_partition_at_a_pending_offset_leaves_that_future_alone(
    producer: tuple[DurableProducer, ScriptedTransport],
) -> None:
    made, link = producer
    waiting = made.send({"entity_id": 3, "signal_type": "view", "weight": 1.0, "timestamp_nanos": 3})
    late = made.send({"entity_id": 4, "signal_type": "view", "weight": 1.0, "timestamp_nanos": 4})
    (_, waiting_sent, _), (_, late_sent, _) = link.sends
    waiting_sent("signals", 1, 7)  # pending at partition 1, offset 7
    link.replies.put(ack(0, 7, 90))  # partition 0's offset 7: not the pending one
    await_read(made, 0, 7)
    assert not waiting.done()
    late_sent("signals", 0, 7)  # its ack came first: resolved from the recent acks
    link.replies.put(ack(1, 7, 91))
    assert late.result(timeout=10) == DurableResult("w", 90, False, 0, 7)
    assert waiting.result(timeout=10) == DurableResult("w", 91, False, 1, 7)
