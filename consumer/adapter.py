"""The Kafka client as the service sees it: one small interface, so that a second client
library (librdkafka through confluent-kafka) can be added beside kafka-python without
touching the batch core (consumer.batch) or the commit step (consumer.commits).

An adapter owns a group consumer and a producer. It speaks plain values: partitions
are ``(topic, partition)`` tuples, offsets are ints, records are ``PolledRecord``s,
and its errors are consumer.errors' (KafkaUnavailable, CommitRefused), never its
library's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from consumer.batch import Poll
from consumer.commits import Delivery, Offsets

Partition = tuple[str, int]


class RebalanceListener(Protocol):
    """Called on the service thread, inside ``poll``: the revoked partitions are still
    owned while ``revoked`` runs, so it may finish and commit their batches."""

    def revoked(self, partitions: Sequence[Partition]) -> None: ...
    def assigned(self, partitions: Sequence[Partition]) -> None: ...


class KafkaAdapter(Protocol):
    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    def poll(self, timeout_ms: int, max_records: int) -> Poll:
        """Up to ``max_records`` records; rebalance callbacks run inside this call, and
        what a callback raised is raised from here."""

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> Delivery:
        """Hand a message to the producer (acks=all); the Delivery says when it is done."""

    def flush(self) -> None: ...
    def commit_async(self, offsets: Offsets, on_done: Callable[[Offsets, BaseException | None], None]) -> None: ...
    def commit_sync(self, offsets: Offsets) -> None: ...

    def lag(self) -> int | None:
        """Sum over assigned partitions of (end offset - position); None when unknown.
        Never raises (it feeds a progress line)."""

    def close(self) -> None:
        """Close both clients without committing anything."""
