"""The group-commit writer: one thread, one write and one fdatasync per batch.

Batch formation (the seed's, with one change):

1. Block until a submission arrives.
2. A single ``append`` waits up to ``batch_timeout`` for more single appends, until
   ``batch_size`` records are gathered. An ``append_batch`` is already a batch its
   caller formed: it is committed at once, as its own frame (never waiting for more: a
   consumer's poll should not pay the timeout, and its records keep the bulk path).
3. Dedup (source position, then the window), encode one frame, write, fdatasync.
4. Only then: indexes updated, futures resolved with their seqs. (One thing happens
   earlier: an ``append_batch`` caller is told its first seq between the write and
   the fdatasync, to build its results while the disk works; it hands them out only
   once its future says the batch is durable.)

A failed write or fsync fails every submission in the batch with the real error and
every later one with the same WalFailed: the file is never written or fsynced again
(the "fsyncgate" lesson: after a failed fsync the dirty pages may be gone, so a
retry that succeeds proves nothing). Reopening recovers from what is on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

from walcore.checkpoint import write_checkpoint
from walcore.dedup import DedupWindow
from walcore.errors import WalFailed
from walcore.files import remove_durably
from walcore.format import (
    CONTENT_KEY,
    EncodedBody,
    encode_body,
    encode_frame,
    encode_seal_frame,
    encode_void_frame,
)
from walcore.frame_index import FrameIndex
from walcore.future import AppendFuture
from walcore.records import AppendResult, EventRecord, fresh_results
from walcore.segment import ActiveSegment, list_segments
from walcore.sources import SourceIndex

log = logging.getLogger("walcore.writer")


@dataclass(slots=True)
class Submission:
    """A caller-formed batch (``append_batch``), encoded by the caller's thread.
    (A single append travels as its AppendFuture, which carries the record.)"""

    records: list[EventRecord]
    body: EncodedBody
    future: Future[list[AppendResult] | None]
    # append_batch's: told the batch's first seq before the write when no record is a
    # duplicate (else None), so the caller builds the results while the disk works,
    # and ``future`` then resolves to None.
    assigned: Future[int | None] | None = None


@dataclass(slots=True)
class Checkpoint:
    """Record durably that seqs up to ``seq`` are applied downstream."""

    seq: int
    future: Future[None]


@dataclass(slots=True)
class TruncateBefore:
    """Delete whole segments whose records are all below ``seq`` (checkpointed ones only)."""

    seq: int
    future: Future[int]


@dataclass(slots=True)
class SourceOffsets:
    """Ask for {(topic, partition): highest stored offset}."""

    future: Future[dict[tuple[str, int], int]]


@dataclass(slots=True)
class StoredAt:
    """Ask which of ``offsets`` of a partition this WAL holds as live events: {offset: seq}."""

    topic: str
    partition: int
    offsets: list[int]
    future: Future[dict[int, int]]


@dataclass(slots=True)
class LowestSeqs:
    """Ask, per partition, the lowest seq this WAL stored at an offset at or after the
    given one: {(topic, partition): seq}, partitions without one left out."""

    starts: dict[tuple[str, int], int]
    future: Future[dict[tuple[str, int], int]]


@dataclass(slots=True)
class Void:
    """Append a void entry for ``seqs`` (ARCHITECTURE invariant 7): from then on they are
    not live events: never replayed by default, never an original for a duplicate or a
    redelivery. The frames holding them are never changed."""

    seqs: list[int]
    reason: str
    future: Future[list[int]]


# Commands run on the writer thread, between batches: they read or change the writer's
# own state (checkpoint, segments, source index, voids), so they never race with an
# append or a rotation, and no other thread touches that state.
Command = Checkpoint | TruncateBefore | SourceOffsets | StoredAt | LowestSeqs | Void
_COMMANDS = (Checkpoint, TruncateBefore, SourceOffsets, StoredAt, LowestSeqs, Void)


_STOP = object()


class Writer:
    def __init__(
        self,
        *,
        directory: Path,
        segment: ActiveSegment,
        next_seq: int,
        checkpoint: int,
        dedup: DedupWindow,
        sources: SourceIndex,
        voided: set[int],
        frames: FrameIndex,
        segment_size: int,
        batch_size: int,
        batch_timeout: float,
        clock: Callable[[], int],
    ) -> None:
        self.directory = directory
        self.segment = segment
        self.voided = voided
        self._frames = frames
        # Read from other threads (Wal.last_seq, Wal.checkpoint_seq): plain int attributes,
        # each replaced whole by this thread, so a reader sees an old or a new value.
        self.next_seq = next_seq
        self.checkpoint = checkpoint
        self.dedup = dedup
        self.sources = sources
        self._segment_size = segment_size
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout
        self._clock = clock
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._carried: Submission | None = None  # a batch that ended a gathering of singles
        self._in_hand: list[Future[Any]] = []  # what the item being handled must resolve
        # Recent fdatasync durations, for metrics: appended here, popped by any thread
        # (deque appends and pops are atomic); bounded, so nobody reading them costs nothing.
        self.fsync_seconds: deque[float] = deque(maxlen=10_000)
        self.failure: WalFailed | None = None
        self._thread = threading.Thread(target=self._run, name="walcore-writer", daemon=True)
        self._thread.start()

    # -- called from any thread ----------------------------------------------------------

    def submit(self, item: AppendFuture | Submission | Command) -> None:
        self._queue.put(item)

    def stop(self, late: Exception) -> None:
        """Everything submitted before this call is committed (or failed) first; anything
        that raced in after it is failed with ``late``."""
        self._queue.put(_STOP)
        self._thread.join()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, AppendFuture):
                item.set_exception(late)
            elif isinstance(item, (Submission, *_COMMANDS)):
                item.future.set_exception(late)
                if isinstance(item, Submission) and item.assigned is not None:
                    item.assigned.set_result(None)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item, self._carried = (self._carried, None) if self._carried is not None else (get(), None)
            if item is _STOP:
                return
            try:
                if self._handle(item):
                    return
            except Exception as exc:  # noqa: BLE001 - whatever it is, the thread must not die silently
                self._broken(exc)

    def _handle(self, item: object) -> bool:
        """Commit or run one queued item (and the singles gathered with it); True to stop."""
        if isinstance(item, _COMMANDS):
            self._in_hand = [item.future]
            self._command(item)
            return False
        if isinstance(item, Submission):
            self._in_hand = [item.future] if item.assigned is None else [item.future, item.assigned]
            self._commit_batch(item)
            return False
        assert isinstance(item, AppendFuture)
        singles, commands, stop = self._gather(item)
        self._in_hand = [*singles, *(command.future for command in commands)]
        self._commit_singles(singles)
        for command in commands:
            self._command(command)
        return stop

    def _broken(self, exc: Exception) -> None:
        """An unexpected error on the writer thread (a bug, a corrupt value): treat it like
        a failed write. Everything in hand and everything after fails with WalFailed; the
        thread lives on to fail later submissions, so no future ever waits for ever."""
        if self.failure is None:
            self.failure = WalFailed(
                f"the WAL writer failed unexpectedly ({exc.__class__.__name__}: {exc}); "
                "the WAL refuses further appends. Reopen it (restart) to recover from the log."
            )
            self.failure.__cause__ = exc
            log.critical("%s", self.failure, exc_info=exc)
        for future in self._in_hand:
            if not future.done():
                future.set_exception(self.failure)
        self._in_hand = []

    def _gather(self, first: AppendFuture) -> tuple[list[AppendFuture], list[Command], bool]:
        singles = [first]
        commands: list[Command] = []
        deadline = time.monotonic() + self._batch_timeout
        get_nowait = self._queue.get_nowait
        while len(singles) < self._batch_size:
            # Take what is already queued without blocking: a blocking get releases the
            # GIL, and with many appending threads each release costs a thread switch.
            try:
                item = get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return singles, commands, True
            if isinstance(item, _COMMANDS):
                commands.append(item)  # runs right after this batch, in order
            elif isinstance(item, Submission):
                self._carried = item  # a caller-formed batch is waiting: commit the singles now
                break
            else:
                singles.append(item)  # type: ignore[arg-type]
        return singles, commands, False

    def _command(self, command: Command) -> None:
        future: Future[Any] = command.future
        if not future.set_running_or_notify_cancel():
            return
        if self.failure is not None:
            future.set_exception(self.failure)
            return
        try:
            if isinstance(command, Checkpoint):
                self._checkpoint(command.seq)
                future.set_result(None)
            elif isinstance(command, TruncateBefore):
                future.set_result(self._truncate_before(command.seq))
            elif isinstance(command, Void):
                future.set_result(self._void(command.seqs, command.reason))
            elif isinstance(command, StoredAt):
                lookup = self.sources.lookup
                found = {offset: lookup(command.topic, command.partition, offset) for offset in command.offsets}
                future.set_result(
                    {offset: seq for offset, seq in found.items() if seq is not None and seq not in self.voided}
                )
            elif isinstance(command, LowestSeqs):
                lowest = self.sources.lowest_seq_from
                lowest_by = {key: lowest(*key, offset) for key, offset in command.starts.items()}
                future.set_result({key: seq for key, seq in lowest_by.items() if seq is not None})
            else:
                future.set_result(self.sources.last_offsets())
        except (OSError, ValueError, WalFailed) as exc:  # handed to the caller, who sees the real error
            future.set_exception(exc)

    def _void(self, seqs: list[int], reason: str) -> list[int]:
        fresh = sorted({seq for seq in seqs if seq not in self.voided})
        outside = [seq for seq in fresh if not 0 < seq < self.next_seq]
        if outside:
            raise ValueError(f"cannot void seqs {outside[:5]}: only stored seqs 1..{self.next_seq - 1} can be voided")
        if not fresh:
            return []
        # Into the active segment whatever its size: a void frame takes no seq, so it must
        # never open a segment (segments are named by the first seq they hold).
        try:
            self.segment.append(encode_void_frame(fresh, reason, self.next_seq, self._clock()))
            self.segment.sync()
        except OSError as exc:
            self._fail([], exc)
            assert self.failure is not None
            raise self.failure from exc
        self.voided.update(fresh)
        return fresh

    def _checkpoint(self, seq: int) -> None:
        if not 0 <= seq < self.next_seq:
            raise ValueError(f"checkpoint seq {seq} is outside 0..{self.next_seq - 1} (last durable seq)")
        write_checkpoint(self.directory, seq)
        self.checkpoint = seq

    def _truncate_before(self, seq: int) -> int:
        if seq > self.checkpoint + 1:
            raise ValueError(
                f"truncate_before({seq}) would delete records after the checkpoint "
                f"({self.checkpoint}); checkpoint them first"
            )
        segments = list_segments(self.directory)
        deleted = 0
        # Oldest first, each removal made durable before the next, so a crash midway
        # leaves a log that starts later, never one with a hole in the middle. A segment
        # goes only when the next one starts at or below ``seq``: all its records are below.
        for (_first, path), (next_first, _next_path) in pairwise(segments):
            if next_first > seq or path == self.segment.path:
                break
            remove_durably(path)
            deleted += 1
        if deleted:
            # What is still on disk starts at the oldest remaining segment: the indexes keep
            # exactly what a reopen would rebuild from the log.
            self.sources.drop_below(segments[deleted][0])
            self._frames.drop_below(segments[deleted][0])
        return deleted

    def _commit_batch(self, submission: Submission) -> None:
        try:
            self._commit_batch_unless_failed(submission)
        finally:
            # Every way but the fast one: the caller waits for the full answer in ``future``.
            if submission.assigned is not None and not submission.assigned.done():
                submission.assigned.set_result(None)

    def _commit_batch_unless_failed(self, submission: Submission) -> None:
        future = submission.future
        if self.failure is not None:
            future.set_exception(self.failure)
            return
        now = self._clock()
        self.dedup.advance(now)
        if self._commit_unique(submission, now):
            return
        body = submission.body
        results, kept, keys = self._assign(submission.records, body.keys)
        if kept and len(kept) != body.count:
            body = encode_body(kept)
        if not kept or self._store(body, keys, now, [future]):
            future.set_result(results)

    def _commit_singles(self, singles: list[AppendFuture]) -> None:
        if self.failure is not None:
            for future in singles:
                future.set_exception(self.failure)
            return
        now = self._clock()
        self.dedup.advance(now)
        records = cast("list[EventRecord]", [future.record for future in singles])  # a single's is never None
        body = encode_body(records)
        results, kept, keys = self._assign(records, body.keys)
        if kept and len(kept) != body.count:
            body = encode_body(kept)
        if not kept or self._store(body, keys, now, singles):
            for future, result in zip(singles, results):
                future.set_result(result)

    def _assign(
        self, records: list[EventRecord], record_keys: Sequence[Hashable]
    ) -> tuple[list[AppendResult], list[EventRecord], dict[Hashable, int]]:
        """Record by record: the original seq of a redelivery or a duplicate, else the
        next seq. ``record_keys`` are the records' dedup keys (``EncodedBody.keys``).
        Returns (one result per record, the records to store, their keys)."""
        redelivered = self._redeliveries(records)
        base_seq = self.next_seq
        kept: list[EventRecord] = []
        keys: dict[Hashable, int] = {}
        results: list[AppendResult] = []
        append_result = results.append
        window_get = self.dedup.get
        keys_get = keys.get
        voided = self.voided
        new_result = tuple.__new__  # NamedTuple's own __new__ is Python code: 3x slower (fresh_results)
        for index, (record, key) in enumerate(zip(records, record_keys)):
            if redelivered:
                seq = redelivered.get(index)
                if seq is not None:
                    append_result(AppendResult(seq, True, True))
                    continue
            seq = keys_get(key)
            if seq is None:
                seq = window_get(key)
                if seq is not None and seq in voided:
                    seq = None  # a voided event is nobody's original
            if seq is not None:
                append_result(AppendResult(seq, True))
                continue
            seq = base_seq + len(kept)
            keys[key] = seq
            kept.append(record)
            append_result(new_result(AppendResult, (seq, False, False)))
        return results, kept, keys

    def _redeliveries(self, records: list[EventRecord]) -> dict[int, int]:
        """{index: original seq} of the records that are Kafka redeliveries: their source
        position is stored, live, and holds the same message (same content and event id).
        A position holding a different message means the topic was recreated or the
        broker's data wiped (offsets start again at 0): that partition is a new source,
        and its positions are forgotten, so its records are stored and acked anew."""
        sources = self.sources
        last_offset = sources.last_offset
        found: dict[int, int] = {}
        for index, record in enumerate(records):
            source = record[5]
            if source is not None and source[2] <= last_offset(source[0], source[1]):
                seq = sources.lookup(*source)
                if seq is not None and seq not in self.voided:
                    found[index] = seq
        if found:
            stored = self._frames.identities(found.values())
            changed = {
                records[index][5][:2]  # type: ignore[index]  # found holds records with a source only
                for index, seq in found.items()
                if seq in stored and stored[seq] != (CONTENT_KEY.pack(*records[index][:4]), records[index][4])
            }
            for topic, partition in sorted(changed):
                log.warning(
                    "%s:%d holds other messages than those this WAL stored from it at the same offsets: "
                    "the topic was recreated or the broker's data wiped. From here on it is a new "
                    "source: its records are stored and acked anew",
                    topic,
                    partition,
                )
                sources.forget(topic, partition)
            if changed:
                found = {index: seq for index, seq in found.items() if records[index][5][:2] not in changed}  # type: ignore[index]
        return found

    def _commit_unique(self, submission: Submission, now: int) -> bool:
        """The common case in bulk, at C speed: a caller-formed batch none of whose
        records is a redelivery or a duplicate. Returns False (nothing done) otherwise,
        and the record-by-record path decides."""
        body = submission.body
        last_offset = self.sources.last_offset
        # Offsets rise within a run, so a run starting past what is stored holds no redelivery.
        if any(run.first_offset <= last_offset(run.topic, run.partition) for run in body.runs):
            return False
        base_seq = self.next_seq
        count = body.count
        # Claimed before the write: should the write fail, the WAL refuses every later
        # append until it is reopened, and reopening rebuilds the window from the log.
        if not self.dedup.claim(body.keys, base_seq):
            return False
        assigned = submission.assigned
        if self._store(body, None, now, [submission.future], assigned):
            submission.future.set_result(None if assigned is not None else fresh_results(base_seq, count))
        return True

    def _store(
        self,
        body: EncodedBody,
        keys: dict[Hashable, int] | None,
        now: int,
        futures: Sequence[Future[Any]],
        assigned: Future[int | None] | None = None,
    ) -> bool:
        """Write and fdatasync the body's frame at the next seq, then index it (``keys``
        into the dedup window, unless claimed already). On a failed write, fail
        ``futures`` and every later append; returns False.
        ``assigned`` is told the first seq between the write and the fdatasync: the
        fdatasync releases the GIL for its whole length, so the caller's thread can
        build its results meanwhile."""
        base_seq = self.next_seq
        try:
            segment = self._segment_with_room()
            at = segment.size
            segment.append(encode_frame(body, base_seq, now))
            if assigned is not None:
                assigned.set_result(base_seq)
            started = time.perf_counter()
            segment.sync()
            self.fsync_seconds.append(time.perf_counter() - started)
        except OSError as exc:
            self._fail(futures, exc)
            return False
        self._frames.add(base_seq, segment.path, at)
        if keys is not None:
            self.dedup.add(keys)
        for run in body.runs:
            self.sources.add(run.topic, run.partition, run.first_offset, run.count, base_seq + run.first_index)
        self.next_seq = base_seq + body.count
        return True

    def _segment_with_room(self) -> ActiveSegment:
        segment = self.segment
        if segment.size >= self._segment_size:
            # The new file's name is made durable (directory fsync) first; then the full
            # segment is sealed (a frame naming the next seq, fdatasynced): a sealed last
            # segment means later segments were lost. A crash in between leaves an
            # unsealed or torn-sealed segment before an empty one, which opens cleanly.
            new = ActiveSegment.create(self.directory, self.next_seq)
            segment.append(encode_seal_frame(self.next_seq, self._clock()))
            segment.sync()
            segment.close()
            self.segment = segment = new
        return segment

    def _fail(self, futures: Sequence[Future[Any]], exc: OSError) -> None:
        self.failure = WalFailed(
            f"writing the WAL failed ({exc.__class__.__name__}: {exc}) on {self.segment.path}; nothing "
            "in this batch is durable, the WAL refuses further appends and is never fsynced again in "
            "this process. Reopen it (restart) to recover from the log."
        )
        self.failure.__cause__ = exc
        log.critical("%s", self.failure)
        for future in futures:
            future.set_exception(self.failure)
