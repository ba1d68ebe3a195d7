"""The Kafka client as the service sees it: one small interface, so that a second client
library (librdkafka through confluent-kafka) can be added beside kafka-python without
touching the batch core (consumer.ingest.plan) or the commit step (consumer.ingest.commits).

An adapter owns a group consumer and a producer. It speaks plain values: partitions
are ``(topic, partition)`` tuples, offsets are ints, records are ``PolledRecord``s,
and its errors are consumer.errors' (KafkaUnavailable, CommitRefused), never its
library's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from consumer.protocol.types import Commits, Delivery, Partition, Poll

__all__ = ["Commits", "Connection", "Delivery", "KafkaAdapter", "Partition", "Poll", "RebalanceListener"]


class Connection(NamedTuple):
    """What an adapter's ``connect`` is given (consumer.kafka.backends builds it from the
    settings): ``*_options`` are in the backend's own names, checked when the
    configuration loaded; ``max_poll_records`` is what kafka-python's consumer is built
    with (librdkafka takes the count at each ``poll``); ``transactional_id``: sends and
    commits go in one transaction per commit (only a backend whose ``fences`` is true in
    consumer.kafka.backends takes one)."""

    bootstrap_servers: str
    group_id: str
    group_instance_id: str | None
    client_id: str
    max_poll_records: int
    consumer_options: dict[str, Any]
    producer_options: dict[str, Any]
    refusal_grace_s: float = 30.0
    transactional_id: str | None = None


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

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Delivery:
        """Hand a message to the producer (acks=all); the Delivery says when it is done."""

    def flush(self) -> None: ...
    def commit_async(self, commits: Commits, on_done: Callable[[Commits, BaseException | None], None]) -> None: ...
    def commit_sync(self, commits: Commits) -> None: ...

    def committed(
        self, partitions: Sequence[Partition], timeout_s: float | None = None
    ) -> dict[Partition, tuple[int, str] | None]:
        """The group's committed (offset, metadata) of each partition; None: never committed.
        ``timeout_s``: give up sooner than a handoff's bound (KafkaUnavailable)."""

    def partitions(self, topic: str, timeout_s: float) -> list[int]:
        """The partition numbers of ``topic`` (empty while unknown); KafkaUnavailable when
        the broker does not answer within ``timeout_s``."""

    def watermarks(self, partitions: Sequence[Partition]) -> dict[Partition, tuple[int, int]]:
        """(first retained offset, end offset) of each partition; KafkaUnavailable when the
        broker does not answer within a handoff's bound."""

    def reply_partition(self, topic: str, key: bytes) -> int | None:
        """The partition of ``topic`` the producer sends messages keyed ``key`` to."""

    def read_from(self, topic: str, partition: int, offset: int) -> list[bytes | None]:
        """Message values of a partition from ``offset`` to its end as of the call (handoffs)."""

    def lag(self) -> dict[Partition, tuple[int, int]] | None:
        """Per assigned partition (end offset, end offset - position); None when unknown.
        Never raises (it feeds a progress line)."""

    def close(self) -> None:
        """Close both clients without committing anything."""


# What every adapter shares, written once.

log = logging.getLogger(__name__)

# A handoff's reads (committed offsets, watermarks, the reply topic) give up after this: the
# service then exits 5 (Kafka unavailable) rather than hang inside a rebalance.
HANDOFF_TIMEOUT_S = 60.0
REFUSAL_QUIET_S = 30.0  # refusals this far apart are separate episodes


class Refusals:
    """The broker refusing this client (rejected credentials, an untrusted certificate), as
    runs of refusals: each library reports them its own way (kafka-python in its log,
    librdkafka to an error callback) and retries for ever, so the service would sit at
    events/s=0 without a word. The first refusal of a run is logged at ERROR; a run that
    has lasted ``grace_s`` becomes KafkaRefused (the adapter's poll raises it: exit 7)."""

    def __init__(self, settings_hint: str) -> None:
        self._hint = settings_hint  # where the user looks: "sasl_* / ssl_*" or "sasl.* / ssl.*"
        self.first: float | None = None  # when the current run of refusals began
        self.last = 0.0
        self.reason = ""

    def note(self, reason: str) -> None:
        now = time.monotonic()
        if self.first is None or now - self.last > REFUSAL_QUIET_S:
            self.first = now
            self.reason = reason
            log.error("the broker refuses this client: %s (check [kafka] %s settings)", reason, self._hint)
        self.last = now

    def ongoing(self) -> bool:
        return self.first is not None and time.monotonic() - self.last < REFUSAL_QUIET_S

    def persisted(self, grace_s: float) -> bool:
        return self.ongoing() and self.first is not None and time.monotonic() - self.first >= grace_s


class ListenerRelay:
    """Calls the service's rebalance listener from a library's callback and keeps what it
    raised: kafka-python logs and swallows it, and it would be lost in librdkafka's C frames
    (a drain that failed at revocation would go unnoticed). The adapter's poll raises it."""

    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener
        self.error: BaseException | None = None

    def call(self, what: str, partitions: Sequence[Partition]) -> None:
        try:
            getattr(self._listener, what)(sorted(partitions))
        except Exception as exc:  # noqa: BLE001 - raised again from poll()
            self.error = self.error or exc

    def raise_pending(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
