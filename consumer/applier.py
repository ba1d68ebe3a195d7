"""The applier: durable WAL batches into the signal store (walcore.storage), and the WAL's
retention, on a thread of its own.

Order of work (docs/store-format.md):

* ``catch_up`` (at start, before consuming): the store's applied seq says where it stands;
  the WAL's live events after it are applied (a crash between the WAL's fsync and the
  store's write, or before the store's flush, loses nothing and applies nothing twice:
  the applied seq moves in the same atomic write as the events), then every voided event
  the store still holds is removed.
* ``submit`` (after each batch's fsync): the batch's newly stored events are queued; the
  thread applies them in one atomic write per batch. ``voided`` queues the removal of
  events voided since (orphans another WAL acked first), in order with the applies.
* Every ``flush_interval_s`` the thread flushes the store, checkpoints the WAL at the
  store's applied seq and deletes the segments below it, keeping ``retain_bytes`` of
  them for replay (``truncation_point``). Disk use is then bounded: the active segment,
  what the last interval wrote, and ``retain_bytes``.

The queue is bounded: a store that cannot keep up slows consumption instead of growing
memory. An error on the thread is kept and raised by ``check`` (the service exits 8).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from consumer.errors import StoreFailed
from walcore import AppendResult, EventRecord, Wal
from walcore.segment import list_segments
from walcore.storage.store import SignalStore

log = logging.getLogger(__name__)

QUEUE_BATCHES = 8
CATCH_UP_CHUNK = 10_000


class _Apply(NamedTuple):
    records: Sequence[EventRecord]
    results: Sequence[AppendResult]


class _Void(NamedTuple):
    seqs: Sequence[int]


_STOP = object()


def truncation_point(segments: Sequence[tuple[int, int]], checkpoint: int, retain_bytes: int) -> int | None:
    """The seq to truncate the WAL before (None: nothing to delete). ``segments`` are
    (first seq, bytes) in seq order, the last one active. A segment may go once every
    record in it is at or below ``checkpoint`` and the newer such segments already keep
    ``retain_bytes`` for replay."""
    done = sum(1 for index in range(len(segments) - 1) if segments[index + 1][0] <= checkpoint + 1)
    keep_from, kept = done, 0  # segments[keep_from:] stay
    while keep_from > 0 and kept < retain_bytes:
        keep_from -= 1
        kept += segments[keep_from][1]
    return segments[keep_from][0] if keep_from > 0 else None


class Applier:
    def __init__(self, wal: Wal, store: SignalStore, *, flush_interval_s: float, retain_bytes: int,
                 after_apply: Callable[[int], None] = lambda _batch: None) -> None:
        """``after_apply(n)``: called after the n-th batch is written to the store, before any
        flush or checkpoint covers it (a test's crash point)."""
        self._wal = wal
        self.store = store
        self._flush_interval_s = flush_interval_s
        self._retain_bytes = retain_bytes
        self._after_apply = after_apply
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_BATCHES)
        self._error: BaseException | None = None
        self._applied_batches = 0
        self.applied_events = 0
        self._flushed_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="tidal-applier", daemon=True)

    def catch_up(self) -> int:
        """Apply what the WAL holds beyond the store, remove what was voided since; then
        start the thread. Returns how many events it applied."""
        store, wal = self.store, self._wal
        store.follow(wal.wal_id, wal.last_seq)
        applied = 0
        chunk: list[tuple[int, EventRecord]] = []
        for seq, record in wal.replay(store.applied_seq + 1):
            chunk.append((seq, record))
            if len(chunk) >= CATCH_UP_CHUNK:
                applied += store.apply(chunk, seq)
                chunk = []
        applied += store.apply(chunk, wal.last_seq) if wal.last_seq > store.applied_seq else 0
        removed = self._unapply(sorted(wal.voided))
        if applied or removed:
            log.info("store caught up with the WAL: %d event(s) applied, %d voided event(s) removed; applied "
                     "through seq %d", applied, removed, store.applied_seq)
        self._flush()
        self._thread.start()
        return applied

    def submit(self, records: Sequence[EventRecord], results: Sequence[AppendResult]) -> None:
        """Queue a durable batch (its records and the WAL's results for them)."""
        self._put(_Apply(records, results))

    def voided(self, seqs: Sequence[int]) -> None:
        """Queue the removal of events just voided in the WAL."""
        if seqs:
            self._put(_Void(seqs))

    def _put(self, item: object) -> None:
        while True:
            self.check()
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        """Raise StoreFailed if the thread failed."""
        if self._error is not None:
            raise StoreFailed(f"the signal store failed: {self._error!r}; the WAL holds every event, a restart "
                              "re-applies what the store lacks") from self._error

    def close(self) -> None:
        """Apply what is queued, flush, checkpoint; then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self.check()

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.05, self._flush_interval_s / 4))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    self._flush()
                    return
                if isinstance(item, _Apply):
                    self._apply(item)
                elif isinstance(item, _Void):
                    self._unapply(item.seqs)
                if time.monotonic() - self._flushed_at >= self._flush_interval_s:
                    self._flush()
        except BaseException as exc:  # noqa: BLE001 - kept, raised on the service thread by check()
            self._error = exc
            log.critical("the signal store failed: %r", exc)

    def _apply(self, batch: _Apply) -> None:
        events = [(result[0], record) for record, result in zip(batch.records, batch.results, strict=True)
                  if not result[1]]  # AppendResult.duplicate: stored before, applied then
        if events:
            self.applied_events += self.store.apply(events, events[-1][0])
        self._applied_batches += 1
        self._after_apply(self._applied_batches)

    def _unapply(self, seqs: Sequence[int]) -> int:
        """Remove voided events the store holds; their records come from the WAL."""
        wanted = {seq for seq in seqs if seq <= self.store.applied_seq}
        if not wanted:
            return 0
        found = [(seq, record) for seq, record in self._wal.replay(min(wanted), include_voided=True)
                 if seq in wanted]
        if len(found) < len(wanted):
            log.warning("%d voided event(s) are no longer in the WAL (retention deleted their segments): the "
                        "store keeps them", len(wanted) - len(found))
        return self.store.unapply(found)

    def _flush(self) -> None:
        """Store durable -> WAL checkpointed at its applied seq -> old segments deleted."""
        self.store.flush()
        applied = self.store.applied_seq
        if applied > self._wal.checkpoint_seq:
            self._wal.checkpoint(applied)
        segments = [(first, path.stat().st_size) for first, path in list_segments(self._wal.directory)]
        cut = truncation_point(segments, self._wal.checkpoint_seq, self._retain_bytes)
        if cut is not None:
            deleted = self._wal.truncate_before(cut)
            log.debug("WAL retention: %d segment(s) below seq %d deleted", deleted, cut)
        self._flushed_at = time.monotonic()
