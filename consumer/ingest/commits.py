"""Committing offsets: the ingest path's last step, and the only code that commits.

After arroyo's ``CommitOffsets`` step: commit is a piece of its own, so "commit only
after durable and delivered" is visible in one place. The rule (ARCHITECTURE
invariants 1-2): a batch's offsets are committed only once every ack and dead letter of
it is confirmed by the broker; batches are committed in order, so an offset is never
committed past a batch that is not settled.

* ``submit`` takes a batch whose WAL write is durable and whose acks/dead letters are
  on their way. ``poll`` commits the leading settled batches asynchronously (no round
  trip in the loop); beyond ``max_in_flight`` batches it drains instead
  (back-pressure: the broker is not keeping up with our acks).
* ``drain`` (stop, revocation, back-pressure) flushes the sends, then commits
  synchronously everything settled, plus the async commits not yet confirmed (one
  lost to a connection reset is never the last word), retrying a failing commit for
  up to ``retry_for_s``.
* A failed delivery raises DeliveryFailed: nothing of that batch, or after it, is
  committed (the records are durable and recognised when consumed again).
* A refused commit (the group moved on) is logged and dropped: the records are durable
  and acked, so their next consumer recognises them.

No Kafka client is imported: the target (consumer.kafka.adapter) is anything with ``flush``,
``commit_async`` and ``commit_sync``, so this is tested with a fake one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from consumer.errors import CommitRefused, DeliveryFailed, KafkaUnavailable
from consumer.protocol.handoff import CommitMark, encode_mark
from consumer.protocol.types import Commits, Delivery, Offsets, Partition

log = logging.getLogger(__name__)


class CommitTarget(Protocol):
    def flush(self) -> None:
        """Block until every send so far is done (delivered or failed)."""

    def commit_async(self, commits: Commits, on_done: Callable[[Commits, BaseException | None], None]) -> None:
        """Send the commit; ``on_done`` runs later on the service thread (inside poll)."""

    def commit_sync(self, commits: Commits) -> None:
        """Commit and wait. Raises CommitRefused (for good) or KafkaUnavailable (try again)."""


class PartitionMark(NamedTuple):
    """What a batch's commit of one partition says (consumer.protocol.handoff.CommitMark): the seq
    of the partition's last event in this WAL, and the send of the partition's ack."""

    last_seq: int
    ack: Delivery


@dataclass(slots=True)
class InFlight:
    offsets: Offsets
    deliveries: Sequence[Delivery]
    marks: dict[Partition, PartitionMark] = field(default_factory=dict)
    first_seq: int = 0  # the lowest seq the batch stored anew (0: none): the WAL keeps it until committed


class Backoff:
    """Exponential backoff with a cap, waiting on the stop event (so SIGTERM cuts it short)."""

    def __init__(self, stop: threading.Event, first: float, cap: float) -> None:
        self._stop = stop
        self._next = first
        self._cap = cap

    def wait(self) -> bool:
        """Sleep the next interval; False when a stop was requested meanwhile."""
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return not self._stop.wait(delay)


def delivered(batch: InFlight) -> bool:
    """True when every delivery of the batch succeeded, False while any is pending;
    raises DeliveryFailed if any failed (then nothing of the batch may be committed)."""
    deliveries = batch.deliveries
    if not all(d.done() for d in deliveries):
        return False
    failed = [error for error in (d.error() for d in deliveries) if error is not None]
    if failed:
        raise DeliveryFailed(
            f"{len(failed)} of {len(deliveries)} ack/DLQ messages were not delivered "
            f"(first: {failed[0]!r}); nothing of this batch is committed"
        )
    return True


def _no_hook(_batch: int) -> None:
    pass


class Committer:
    def __init__(
        self,
        target: CommitTarget,
        *,
        wal_id: str,
        max_in_flight: int,
        retry_for_s: float,
        stop: threading.Event,
        before_commit: Callable[[int], None] = _no_hook,
        on_committed: Callable[[Commits], None] = lambda _commits: None,
        on_sync_commit: Callable[[float, bool], None] = lambda _seconds, _ok: None,
        history: Mapping[Partition, frozenset[str]] | None = None,
    ) -> None:
        """``before_commit(n)``: called once the n-th batch is settled (durable, every ack
        and dead letter delivered), before its offsets are committed: a test's crash point.
        ``on_committed(commits)``: called with what the broker confirmed.
        ``on_sync_commit(seconds, ok)``: each synchronous commit attempt, and each async
        commit that failed (0 s), for metrics. ``history``: per partition, the WALs its
        earlier commit marks list (consumer.ingest.ownership), carried on in this WAL's marks."""
        self._history = {} if history is None else history
        self._on_committed = on_committed
        self._on_sync_commit = on_sync_commit
        self._target = target
        self._wal_id = wal_id
        self._max_in_flight = max_in_flight
        self._retry_for_s = retry_for_s
        self._stop = stop
        self._before_commit = before_commit
        self._settled = 0
        self._in_flight: deque[InFlight] = deque()
        # Commits sent by commit_async and not yet confirmed by the broker: the drain
        # commits them again, synchronously.
        self._unconfirmed: Commits = {}
        # Commits sent and not confirmed (or refused), with the lowest seq their batches stored
        # anew: the WAL keeps those seqs (floor).
        self._awaiting: deque[tuple[Commits, int]] = deque()
        self._last_seqs: dict[Partition, int] = {}  # per partition, the highest seq this WAL stored

    @property
    def in_flight(self) -> int:
        """Batches submitted and not yet committed (or handed to an async commit)."""
        return len(self._in_flight)

    @property
    def deliveries_pending(self) -> int:
        """Acks and dead letters of the batches in flight not yet confirmed (for metrics)."""
        return sum(not delivery.done() for batch in self._in_flight for delivery in batch.deliveries)

    @property
    def floor(self) -> int | None:
        """The lowest seq a batch of this run stored whose offsets are not confirmed
        committed (None: none). Retention keeps it: its offsets will be consumed again, and
        only the WAL's copy makes that a redelivery rather than a new event."""
        seqs = [batch.first_seq for batch in self._in_flight if batch.first_seq]
        seqs += [seq for _, seq in self._awaiting]
        return min(seqs, default=None)

    def forget_refused(self) -> None:
        """At an assignment (after the revocation's drain): the commits still unconfirmed
        were refused, and the ownership's own count of what is uncommitted covers them."""
        self._awaiting.clear()

    def submit(self, batch: InFlight) -> None:
        self._in_flight.append(batch)

    def poll(self) -> None:
        """Commit what is settled (async); drain when too much is in flight."""
        if len(self._in_flight) > self._max_in_flight:
            self.drain()
            return
        commits, floor = self._take_settled()
        if commits:
            self._unconfirmed.update(commits)
            if floor:
                self._awaiting.append((commits, floor))
            self._target.commit_async(commits, self._async_done)

    def drain(self) -> int:
        """Flush every send, then commit synchronously all that is settled and every
        async commit not yet confirmed. Returns how many batches it settled. Raises
        DeliveryFailed when a delivery failed (nothing of that batch is committed)."""
        batches = len(self._in_flight)
        if batches:
            self._target.flush()
        settled, floor = self._take_settled()
        commits = {**self._unconfirmed, **settled}  # later batches carry higher offsets
        if floor:
            self._awaiting.append((commits, floor))
        if self._in_flight:
            raise DeliveryFailed("an ack/DLQ delivery is still pending after flush(); nothing of it is committed")
        if commits and self._commit_sync(commits):
            self._awaiting.clear()
        # Committed, or refused and logged: either way what was not committed is durable
        # and recognised when consumed again.
        self._unconfirmed.clear()
        return batches

    def _take_settled(self) -> tuple[Commits, int]:
        """Pop the leading batches whose deliveries all succeeded; their merged commits,
        each with its mark (consumer.protocol.handoff) as metadata, and the lowest seq they stored
        anew (0: none)."""
        commits: Commits = {}
        floor = 0
        while self._in_flight and delivered(self._in_flight[0]):
            batch = self._in_flight.popleft()
            floor = floor or batch.first_seq  # batches store ascending seqs
            self._settled += 1
            self._before_commit(self._settled)
            for partition, offset in batch.offsets.items():  # later batches carry higher offsets
                mark = batch.marks.get(partition)
                last_seq = max(self._last_seqs.get(partition, 0), mark.last_seq if mark else 0)
                self._last_seqs[partition] = last_seq
                ack = mark.ack.position() if mark else None
                wals = self._history.get(partition, frozenset())
                commits[partition] = (
                    offset,
                    encode_mark(CommitMark(self._wal_id, last_seq, *ack, wals)) if ack else "",
                )
        return commits, floor

    def _async_done(self, commits: Commits, error: BaseException | None) -> None:
        if error is not None:
            log.warning(
                "async offset commit failed (%r); the next commit, or the drain's synchronous one, covers it", error
            )
            self._on_sync_commit(0.0, False)
            return
        for tp, commit in commits.items():
            if self._unconfirmed.get(tp) == commit:  # not superseded by a later commit meanwhile
                del self._unconfirmed[tp]
        # Confirmed in order: this one and every one sent before it.
        while any(sent is commits for sent, _ in self._awaiting):
            self._awaiting.popleft()
        self._on_committed(commits)

    def _commit_sync(self, commits: Commits) -> bool:
        """True once the broker confirmed ``commits``; False when it was refused or kept failing."""
        backoff = Backoff(self._stop, first=0.1, cap=5.0)
        deadline = time.monotonic() + self._retry_for_s
        while True:
            started = time.monotonic()
            try:
                self._target.commit_sync(commits)
                self._on_sync_commit(time.monotonic() - started, True)
                self._on_committed(commits)
                return True
            except (CommitRefused, KafkaUnavailable) as exc:
                self._on_sync_commit(time.monotonic() - started, False)
                if not self._retry(exc, deadline, backoff):
                    return False

    def _retry(self, exc: CommitRefused | KafkaUnavailable, deadline: float, backoff: Backoff) -> bool:
        """Log a failed synchronous commit; True to try again."""
        if isinstance(exc, CommitRefused):
            # The group rebalanced under us; the records are durable and acked, so a
            # redelivery (to us or to another instance) is recognised, not lost.
            log.warning("offset commit refused after a rebalance (%s); the batch is durable and acked", exc)
            return False
        if time.monotonic() > deadline:
            log.warning(
                "offset commit still failing after %.0fs (%s); the next commit covers it", self._retry_for_s, exc
            )
            return False
        log.warning("offset commit failed (%s); retrying", exc)
        return backoff.wait()
