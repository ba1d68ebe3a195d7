"""The service's side of the store stage: feeding the applier process
(consumer.store.apply_worker) and keeping the WAL's retention.

Why a process: applying an event into RocksDB costs a few microseconds of Python and
RocksDB work; on the service's thread (or any thread of its interpreter) that would hold
the interpreter lock the poll loop needs, and cut the ingest rate by half or more
(docs/performance.md). The worker applies beside the loop, on the other core.

Order of work (docs/store-format.md):

* ``start``: the worker binds the store to this WAL and catches up from the WAL files
  (the live events after the store's applied seq; a crash anywhere before loses nothing
  and applies nothing twice, since the applied seq moves in the same atomic write as the
  events), then removes every voided event the store holds. ``start`` returns once it
  has, before anything is consumed.
* ``submit`` (after each batch's fsync): the seqs, WAL rows and sources of the batch's new events go
  to the worker; ``voided`` sends the seqs voided since, in order with the batches.
* The worker flushes the store every ``flush_interval_s`` and reports the seq it holds
  durably; ``check`` (each loop turn) checkpoints the WAL there and deletes the segments
  below it, keeping ``retain_bytes`` of them (``truncation_point``), and never one holding
  a seq whose offset is not committed yet (``keep_from``). Disk use is then bounded: the
  active segment, what the worker has not flushed or the group not committed yet, and
  ``retain_bytes``.

Messages wait in a queue of at most MAX_QUEUED_BYTES while the worker catches up (a burst
beyond its pace); past that, ``submit`` waits. The worker exiting early is StoreFailed
(exit 8); the service dying takes the worker with it (PR_SET_PDEATHSIG, set by the
worker itself: consumer.store.apply_worker). The worker runs in a session of its own, so a
signal meant for the service's process group never stops it before the service's drain.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from operator import itemgetter

from consumer.config import Settings
from consumer.errors import StoreFailed
from walcore import AppendResult, Wal
from walcore.format import CONTENT_KEY
from walcore.segment import list_segments

log = logging.getLogger(__name__)

# Message framing on the worker's standard input: a type byte and the payload's length.
FRAME = struct.Struct("<BI")
START, BATCH, VOID = 1, 2, 3
MAX_QUEUED_BYTES = 256 * 1024 * 1024
STOP_TIMEOUT_S = 600.0  # a worker far behind may take this long to finish at a stop
# The worker's reports on its standard output: the seq its store holds durably.
REPORT = struct.Struct("<Q")
_HEADER = struct.Struct("<I")  # a BATCH's runs' JSON length (encode_batch)
_DUPLICATE = itemgetter(1)  # AppendResult.duplicate


def encode_batch(runs: Sequence[tuple[str, int, int]], seqs: bytes, rows: bytes) -> bytes:
    """A BATCH message's payload: the length of its runs' JSON, the runs, the seqs, the rows."""
    header = json.dumps(list(runs), separators=(",", ":")).encode()
    return _HEADER.pack(len(header)) + header + seqs + rows


def decode_batch(payload: bytes) -> tuple[list[tuple[str, int, int]], bytes, bytes]:
    """``encode_batch``'s (runs, seqs, rows) back."""
    (length,) = _HEADER.unpack_from(payload)
    runs = [(str(topic), int(partition), int(count)) for topic, partition, count in json.loads(payload[4 : 4 + length])]
    body = payload[4 + length :]
    count = len(body) // (8 + CONTENT_KEY.size)
    return runs, body[: 8 * count], body[8 * count :]


def fresh_runs(runs: Sequence[tuple[str, int, int]], fresh: Sequence[int]) -> list[tuple[str, int, int]]:
    """The runs of the records at indexes ``fresh`` (ascending) alone."""
    found, start, at = [], 0, 0
    for topic, partition, count in runs:
        end = start + count
        taken = 0
        while at < len(fresh) and fresh[at] < end:
            taken, at = taken + 1, at + 1
        if taken:
            found.append((topic, partition, taken))
        start = end
    return found


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


def _exited(code: int) -> StoreFailed:
    how = (
        f"was killed by {signal.Signals(-code).name}"
        if code < 0
        else f"exited {code} (its CRITICAL line above says why)"
    )
    return StoreFailed(
        f"the store's applier {how}; the WAL holds every event, a restart re-applies what the store lacks"
    )


class Applier:
    def __init__(self, wal: Wal, settings: Settings, keep_from: Callable[[], int | None] = lambda: None) -> None:
        """``keep_from()``: the lowest seq retention must keep whatever the store holds (the
        first one whose offset is not committed: it is consumed again, and only the WAL's
        copy makes it a redelivery); 0 keeps everything, None sets no bound."""
        self._keep_from = keep_from
        self._wal = wal
        self._retain_bytes = settings.store.retain_wal_bytes
        signals = json.dumps([signal.model_dump() for signal in settings.signals])
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "consumer.store.apply_worker",
                "--wal-dir",
                str(wal.directory),
                "--store-dir",
                str(settings.store_dir()),
                "--signals",
                signals,
                "--flush-interval-s",
                str(settings.store.flush_interval_s),
                "--parent-pid",
                str(os.getpid()),
            ],
            # A session of its own: a signal to the service's process group (systemd's
            # KillMode, `timeout`, Ctrl-C) reaches the service only, which drains and then
            # ends the worker's input; the worker must not die first (exit 8, drain lost).
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._input = self._process.stdin.fileno()
        self._output = self._process.stdout.fileno()
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._ready = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._sender = threading.Thread(target=self._send_all, name="tidal-applier-feed", daemon=True)
        self._sender.start()
        self._pending = b""
        self._reported = False  # its early exit was raised already (one CRITICAL line, not two)
        self.applied_seq = 0

    def start(self) -> None:
        """Send START and wait until the worker has caught up with the WAL (its first report)."""
        wal = self._wal
        self._put(
            START, json.dumps({"wal_id": wal.wal_id, "last_seq": wal.last_seq, "voided": sorted(wal.voided)}).encode()
        )
        if not self._read_reports(wait=True):  # its output ended: it exited
            self._process.wait()
            self._fail_if_exited()
        self._retain()

    def submit(self, rows: bytes, runs: Sequence[tuple[str, int, int]], results: Sequence[AppendResult]) -> None:
        """Send a durable batch's new events (the WAL's rows of it, their sources as
        (topic, partition, count) runs in order, and the results)."""
        if not results:
            return
        if not any(map(_DUPLICATE, results)):  # the usual case: every record new, seqs consecutive
            seqs = array("q", range(results[0][0], results[0][0] + len(results)))
        else:
            fresh = [index for index, result in enumerate(results) if not result[1]]
            if not fresh:
                return
            seqs = array("q", (results[index][0] for index in fresh))
            size = len(rows) // len(results)
            rows = b"".join(rows[index * size : (index + 1) * size] for index in fresh)
            runs = fresh_runs(runs, fresh)
        self._put(BATCH, encode_batch(runs, seqs.tobytes(), rows))

    def voided(self, seqs: Sequence[int]) -> None:
        """Send the seqs just voided in the WAL (the worker removes them from the store)."""
        if seqs:
            self._put(VOID, array("q", seqs).tobytes())

    def check(self) -> None:
        """Checkpoint and truncate the WAL to what the worker reports durable; raise
        StoreFailed if the worker failed."""
        if self._error is not None:
            raise StoreFailed(f"the store's applier cannot be fed: {self._error!r}") from self._error
        if self._read_reports():
            self._retain()
        self._fail_if_exited()

    def close(self) -> None:
        """Send what is queued, end the worker's input, wait for its last flush, checkpoint."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._sender.join()
        try:
            code = self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise StoreFailed(f"the store's applier did not finish within {STOP_TIMEOUT_S:.0f} s") from None
        self._read_reports()  # it has exited: everything it wrote is there
        self._process.stdout.close()  # type: ignore[union-attr]
        if code != 0:
            if self._reported:
                return
            raise _exited(code)
        self._retain()

    def _put(self, kind: int, payload: bytes) -> None:
        message = FRAME.pack(kind, len(payload)) + payload
        with self._ready:
            while self._queued_bytes > MAX_QUEUED_BYTES and self._error is None:
                self._ready.wait(0.5)
                self._fail_if_exited()
            self._queue.append(message)
            self._queued_bytes += len(message)
            self._ready.notify_all()

    def _send_all(self) -> None:
        """The feeding thread: writes queued messages to the worker (os.write releases the
        interpreter lock while the pipe is full), closes its input at the end."""
        try:
            while True:
                with self._ready:
                    while not self._queue and not self._closing:
                        self._ready.wait()
                    if not self._queue:
                        break
                    message = self._queue.popleft()
                view = memoryview(message)
                while view:
                    view = view[os.write(self._input, view) :]
                with self._ready:
                    self._queued_bytes -= len(message)
                    self._ready.notify_all()
        except OSError as exc:  # EPIPE: the worker is gone; check() says so
            self._error = exc if exc.errno != errno.EPIPE else StoreFailed("the store's applier exited")
        finally:
            self._process.stdin.close()  # type: ignore[union-attr]

    def _read_reports(self, *, wait: bool = False) -> bool:
        """Read the worker's reports (the seq its store holds durably); True if any.
        ``wait``: block until the first one (or the end of its output)."""
        data = self._pending
        os.set_blocking(self._output, wait)
        try:
            while chunk := os.read(self._output, 4096):
                data += chunk
                if wait and len(data) >= REPORT.size:
                    break
        except BlockingIOError:  # nothing more for now
            pass
        whole = len(data) - len(data) % REPORT.size
        self._pending = data[whole:]
        reports = [seq for (seq,) in REPORT.iter_unpack(data[:whole])]
        if reports:
            self.applied_seq = reports[-1]
        return bool(reports)

    def _fail_if_exited(self) -> None:
        code = self._process.poll()
        if code is not None:
            self._reported = True  # close() then does not report it a second time
            raise _exited(code)

    def _retain(self) -> None:
        """Checkpoint the WAL at what the store holds durably, delete segments below it."""
        wal = self._wal
        if self.applied_seq > wal.checkpoint_seq:
            wal.checkpoint(min(self.applied_seq, wal.last_seq))
        segments = [(first, path.stat().st_size) for first, path in list_segments(wal.directory)]
        keep_from = self._keep_from()
        done = wal.checkpoint_seq if keep_from is None else min(wal.checkpoint_seq, keep_from - 1)
        cut = truncation_point(segments, done, self._retain_bytes)
        if cut is not None:
            deleted = wal.truncate_before(cut)
            log.debug("WAL retention: %d segment(s) below seq %d deleted", deleted, cut)
