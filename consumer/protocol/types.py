"""The types the Kafka layer and the ingest core share, with no behaviour: a partition, the
offsets and commits of partitions, a polled record, a poll, a send on its way. Both sides
import them from here, so the adapter interface (consumer.kafka.adapter) depends on
neither the batch core nor the commit step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

Partition = tuple[str, int]
Offsets = dict[Partition, int]  # (topic, partition) -> next offset to consume
Commits = dict[Partition, tuple[int, str]]  # (topic, partition) -> (next offset, metadata)


class Delivery(Protocol):
    """One send (an ack or a dead letter) on its way to the broker."""

    def done(self) -> bool: ...
    def error(self) -> BaseException | None: ...

    def position(self) -> tuple[int, int] | None:
        """(partition, offset) the broker gave the message; None until delivered."""


class PolledRecord(Protocol):
    """A consumed message as the batch core reads it. kafka-python's ConsumerRecord has
    these attributes already (so its adapter passes records through without a copy);
    ``Polled`` is the plain one, for tests and for adapters that must build one."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...
    @property
    def timestamp(self) -> int: ...


class Polled(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int = -1


# One poll: (topic, partition) -> its records in offset order. kafka-python's
# TopicPartition is a (topic, partition) named tuple, so its poll result is one as is.
Poll = Mapping[tuple[str, int], Sequence[PolledRecord]]
