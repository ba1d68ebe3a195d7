"""``Wal``: open (= recover), append, replay, checkpoint, truncate, close."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar, TypeVar

from walcore.dedup import DedupWindow
from walcore.errors import WalClosed, WalCorruption
from walcore.files import DIR_MODE, DirLock, atomic_write
from walcore.format import EncodedBody, encode_body
from walcore.frame_index import FrameIndex
from walcore.future import AppendFuture
from walcore.records import AppendResult, EventRecord, fresh_results, validate_record
from walcore.repair import cut_torn_tail
from walcore.replay import recent_keys, replay_log
from walcore.scan import scan_log
from walcore.segment import ActiveSegment
from walcore.writer import (
    Checkpoint,
    Command,
    LowestSeqs,
    SourceOffsets,
    StoredAt,
    Submission,
    TruncateBefore,
    Void,
    Writer,
)

log = logging.getLogger(__name__)

WAL_ID_NAME = "WAL_ID"
_WAL_ID = re.compile(r"[0-9a-f]{16}")
T = TypeVar("T")


@dataclass(frozen=True)
class WalConfig:
    """Tuning. Defaults are measured choices (docs/wal-format.md, benchmarks/wal_bench.py)."""

    segment_size: int = 64 * 1024 * 1024  # rotate once a segment reaches this many bytes
    batch_size: int = 5000  # most records one group commit gathers from single appends
    batch_timeout: float = 0.010  # seconds a single append waits for company
    dedup_window: float = 30.0  # seconds a stored key stays a duplicate (at least)
    dedup_max_keys: int = 2_000_000  # memory bound of the window (both generations)

    # The one statement of each field's range, in pydantic's words (ge/gt/le), so that
    # configuration (consumer.config.WalSettings) checks exactly what this class checks.
    LIMITS: ClassVar[dict[str, dict[str, float]]] = {
        "segment_size": {"ge": 1},  # any size works: a segment rotates after the frame that fills it
        "batch_size": {"ge": 1},
        "batch_timeout": {"ge": 0, "le": 10},
        "dedup_window": {"gt": 0},
        "dedup_max_keys": {"ge": 2},
    }

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not _within(value, self.LIMITS[field.name]):
                raise ValueError(f"WalConfig.{field.name}={value!r} is out of range {self.LIMITS[field.name]}")


def _within(value: float, limits: dict[str, float]) -> bool:
    return (
        math.isfinite(value)
        and value >= limits.get("ge", -math.inf)
        and value > limits.get("gt", -math.inf)
        and value <= limits.get("le", math.inf)
    )


class Wal:
    """A write-ahead log in one directory. Thread-safe: many threads may append.

    Use ``Wal.open``; ``with Wal.open(...) as wal:`` closes it (draining appends).
    """

    def __init__(self, directory: Path, config: WalConfig, lock: DirLock, wal_id: str, *, writer: Writer) -> None:
        self.directory = directory
        self.config = config
        self.wal_id = wal_id
        self._lock = lock
        self._writer = writer
        self._state = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls, directory: str | Path, config: WalConfig | None = None, *, clock: Callable[[], int] = time.time_ns
    ) -> Wal:
        """Create or recover the WAL in ``directory`` and take its exclusive lock.

        ``clock`` returns nanoseconds since the epoch (batch timestamps, dedup window);
        tests pass a fake one to move time without sleeping.
        """
        config = config or WalConfig()
        directory = Path(directory)
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        lock = DirLock(directory)
        try:
            wal_id = _wal_id(directory)
            scan = scan_log(directory)
            torn = scan.torn
            if torn is not None:
                kept = cut_torn_tail(torn)
                log.warning("cut %s; the cut bytes are kept in %s", torn.describe(), kept)
            if scan.segments:
                last = scan.segments[-1]
                segment = ActiveSegment(last.path, last.first_seq, last.valid_end)
            else:
                segment = ActiveSegment.create(directory, scan.next_seq)
            now = clock()
            window_ns = int(config.dedup_window * 1e9)
            dedup = DedupWindow(window_ns, config.dedup_max_keys, now)
            dedup.preload(recent_keys(scan, now - window_ns, config.dedup_max_keys // 2))
            frames = FrameIndex()
            for segment_scan in scan.segments:
                for offset, header in segment_scan.frames:
                    frames.add(header.base_seq, segment_scan.path, offset)
            writer = Writer(
                directory=directory,
                segment=segment,
                next_seq=scan.next_seq,
                checkpoint=scan.checkpoint,
                dedup=dedup,
                sources=scan.sources,
                voided=scan.voided,
                frames=frames,
                segment_size=config.segment_size,
                batch_size=config.batch_size,
                batch_timeout=config.batch_timeout,
                clock=clock,
            )
        except BaseException:
            lock.release()
            raise
        log.info(
            "opened WAL %s (%s): seqs %d..%d in %d segment(s), checkpoint %d",
            directory,
            wal_id,
            scan.first_seq,
            scan.next_seq - 1,
            len(scan.segments) or 1,
            scan.checkpoint,
        )
        return cls(directory, config, lock, wal_id, writer=writer)

    # -- appending -----------------------------------------------------------------------

    def append(self, record: EventRecord) -> Future[AppendResult]:
        """Submit one record; the future resolves once it is durable (or a duplicate).
        Raises InvalidRecord (a ValueError) at once for an out-of-range field."""
        validate_record(record)
        future = AppendFuture(record)
        self._submit(future)
        return future

    def append_batch(self, records: Sequence[EventRecord]) -> list[AppendResult]:
        """Append a caller-formed batch as one group commit; returns after the fsync,
        with one result per record, in order. Validates the whole batch first: an
        invalid record raises InvalidRecord and nothing of the batch is written."""
        records = list(records)
        if not records:
            return []
        assigned: Future[int | None] = AppendFuture()
        future: Future[list[AppendResult] | None] = AppendFuture()
        self._submit(Submission(records, encode_body(records), future, assigned))
        first_seq = assigned.result()
        if first_seq is None:
            return future.result()  # type: ignore[return-value]  # the writer's full answer
        # No record is a duplicate: build the results here while the writer thread is in
        # fdatasync (which releases the GIL), and hand them out once the batch is durable.
        results = fresh_results(first_seq, len(records))
        future.result()  # raises if the write or the fdatasync failed
        return results

    def submit_batch(self, records: Sequence[EventRecord]) -> Future[list[AppendResult]]:
        """``append_batch`` without waiting: the future resolves after the fsync. Lets a
        caller prepare its next batch while this one is written. Batches are committed
        in submission order, each as its own frame."""
        return self.submit_encoded(records, encode_body(records) if records else None)

    def submit_encoded(self, records: Sequence[EventRecord], body: EncodedBody | None) -> Future[list[AppendResult]]:
        """``submit_batch`` of records the caller encoded (``walcore.format.encode_body``),
        so it can keep the body's rows (the store's applier reads them)."""
        records = list(records)
        future: Future[list[AppendResult]] = AppendFuture()
        if body is None or not records:
            future.set_result([])
            return future
        self._submit(Submission(records, body, future))  # type: ignore[arg-type]
        return future

    def _submit(self, item: AppendFuture | Submission | Command) -> None:
        # No lock on this hot path: a submission that races past close() is failed with
        # WalClosed by the writer's stop(), never left unresolved.
        if self._closed:
            raise WalClosed(f"WAL {self.directory} is closed")
        if self._writer.failure is not None:
            raise self._writer.failure
        self._writer.submit(item)

    # -- reading ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Highest durable seq (0 when the log is empty)."""
        return self._writer.next_seq - 1

    @property
    def dedup_keys(self) -> int:
        """Keys the dedup window holds now (for metrics)."""
        return self._writer.dedup.size

    def take_fsync_seconds(self) -> list[float]:
        """The durations of the fdatasyncs since the last call (at most the last 10,000)."""
        recent = self._writer.fsync_seconds
        taken = []
        while recent:
            taken.append(recent.popleft())
        return taken

    def dedup_bytes(self) -> int:
        """Estimated memory of the dedup window (for metrics)."""
        return self._writer.dedup.estimated_bytes()

    @property
    def checkpoint_seq(self) -> int:
        return self._writer.checkpoint

    def source_offsets(self) -> dict[tuple[str, int], int]:
        """{(topic, partition): highest offset stored} for every partition seen."""
        return self._command(command := SourceOffsets(Future()), command.future)

    def replay(self, from_seq: int = 1, *, include_voided: bool = False) -> Iterator[tuple[int, EventRecord]]:
        """Durable (seq, record) pairs from ``from_seq`` up to ``last_seq`` as of this
        call: live events only, unless ``include_voided``. Only the segments holding them
        are read, each verified whole as it is read back (damage since open raises
        WalCorruption, never replays)."""
        return replay_log(self.directory, from_seq, self.last_seq, () if include_voided else self.voided)

    @property
    def voided(self) -> frozenset[int]:
        """The seqs void entries have voided (not live events)."""
        return frozenset(self._writer.voided)

    def void(self, seqs: Sequence[int], reason: str) -> list[int]:
        """Append a void entry for ``seqs`` (stored events that must not count as live:
        another WAL's ack for the same Kafka offset came first). Durable on return;
        returns the seqs newly voided. The frames holding them are never changed."""
        return self._command(command := Void(list(seqs), reason, Future()), command.future)

    def stored_at(self, topic: str, partition: int, offsets: Sequence[int]) -> dict[int, int]:
        """{offset: seq} for those of ``offsets`` of a Kafka partition held as live events."""
        return self._command(command := StoredAt(topic, partition, list(offsets), Future()), command.future)

    def lowest_seqs(self, starts: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Per partition, the lowest seq stored at the given offset or after it (voided
        ones too); partitions holding none are left out."""
        return self._command(command := LowestSeqs(dict(starts), Future()), command.future)

    # -- checkpoint and truncation (commands run by the writer thread, between batches) ----

    def checkpoint(self, seq: int) -> None:
        """Durably record that everything up to ``seq`` is applied downstream.
        Raises ValueError unless 0 <= seq <= last_seq."""
        self._command(command := Checkpoint(seq, Future()), command.future)

    def truncate_before(self, seq: int) -> int:
        """Delete whole segments whose records are all below ``seq``. Only checkpointed
        data may go: ``seq`` must be at most checkpoint + 1 (else ValueError). The active
        segment is never deleted. Returns how many segments were deleted."""
        return self._command(command := TruncateBefore(seq, Future()), command.future)

    def _command(self, command: Command, future: Future[T]) -> T:
        """Run ``command`` on the writer thread; ``future`` is its own (typed) future."""
        self._submit(command)
        return future.result()

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Commit everything already submitted, then release the directory."""
        with self._state:
            if self._closed:
                return
            self._closed = True
        self._writer.stop(WalClosed(f"WAL {self.directory} was closed before this append was taken"))
        self._writer.segment.close()
        self._lock.release()

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_wal_id(directory: Path) -> str | None:
    """The WAL's identity as stored; None when it has none yet. Damage (not the 16
    lowercase hex characters walcore writes) is WalCorruption naming the file."""
    path = directory / WAL_ID_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    wal_id = raw.decode("ascii", errors="replace").strip()
    if not _WAL_ID.fullmatch(wal_id):
        raise WalCorruption(path, 0, f"not a WAL id (16 hex characters): {raw[:40]!r}")
    return wal_id


def _wal_id(directory: Path) -> str:
    """The WAL's identity, made once and kept: acks name it, so (wal_id, seq) names a
    stored event across a fleet of instances."""
    wal_id = read_wal_id(directory)
    if wal_id is None:
        wal_id = uuid.uuid4().hex[:16]
        atomic_write(directory, WAL_ID_NAME, wal_id.encode())
    return wal_id
