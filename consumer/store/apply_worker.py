"""The store's applier process: ``python -m consumer.store.apply_worker`` (started by
consumer.store.applier, never by hand).

A process of its own so that applying events into the store (RocksDB writes, the decay
math) runs beside the service's loop instead of sharing its interpreter lock. It owns the
store; the service owns the WAL. On its standard input, framed messages
(consumer.store.applier.FRAME): START (the WAL's id, its last seq and its voided seqs), BATCH
(the seqs, WAL rows and source runs of a durable batch's new events: the rows are applied, the
sources kept in the store's placement record, consumer.protocol.placement), VOID (seqs voided since). On its
standard output, after every store flush, the seq the store holds durably
(consumer.store.applier.REPORT): the service checkpoints the WAL there and deletes older segments.

At START it catches up from the WAL files (replay, read-only: the events after the
store's applied seq, voided ones skipped) and removes voided events the store holds. End
of input: it applies what it has, flushes, reports, and exits 0. A store it cannot use
(another WAL's, or ahead of this WAL) exits 8 with one line saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import struct
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from consumer.config import SignalConfig, build_schema
from consumer.errors import ExitCode
from consumer.protocol import placement
from consumer.store.applier import BATCH, FRAME, REPORT, START, VOID, decode_batch
from walcore.errors import WalCorruption
from walcore.records import EventRecord
from walcore.replay import replay_log
from walcore.segment import list_segments
from walcore.storage.rocks import RocksEngine
from walcore.storage.store import WAL_ROW, SignalStore, StoreMismatch

log = logging.getLogger("consumer.store.apply_worker")  # run as __main__: named for its log lines
CATCH_UP_CHUNK = 10_000
_SEQ = struct.Struct("=q")  # a BATCH's seqs: native int64s (consumer.store.applier packs an array("q"))


class Worker:
    def __init__(self, store: SignalStore, wal_dir: Path, flush_interval_s: float, output: int) -> None:
        self.store = store
        self._wal_dir = wal_dir
        self._flush_interval_s = flush_interval_s
        self._output = output
        self._flushed_at = time.monotonic()
        self._held: placement.Held | None = None  # the store's placement record (start reads it)
        self._recorded = False  # whether the store holds one yet

    def start(self, wal_id: str, last_seq: int, voided: Sequence[int]) -> None:
        """Bind the store to the WAL, catch up with it, remove what was voided."""
        self.store.follow(wal_id, last_seq)
        segments = list_segments(self._wal_dir)
        first_held = segments[0][0] if segments else last_seq + 1
        missing = (self.store.applied_seq + 1, min(first_held, last_seq + 1) - 1)
        if missing[0] <= missing[1]:
            log.warning(
                "the WAL no longer holds seqs %d..%d (retention deleted those segments after a store had "
                "applied them): this store, applied through seq %d, will lack those events. Restore the "
                "store directory this WAL was applied to, or its missing segments (docs/store-format.md)",
                *missing,
                self.store.applied_seq,
            )
        recorded = self.store.placement()
        self._held, self._recorded = placement.decode(recorded, self.store.applied_seq), recorded is not None
        applied = 0
        chunk: list[tuple[int, EventRecord]] = []
        for seq, record in replay_log(self._wal_dir, self.store.applied_seq + 1, last_seq, set(voided)):
            chunk.append((seq, record))
            if len(chunk) >= CATCH_UP_CHUNK:
                applied += self.store.apply(
                    chunk,
                    seq,
                    self._observe(placement.runs_of(r.source for _, r in chunk), [r.entity_id for _, r in chunk]),
                )
                chunk = []
        if last_seq > self.store.applied_seq:
            applied += self.store.apply(
                chunk,
                last_seq,
                self._observe(placement.runs_of(r.source for _, r in chunk), [r.entity_id for _, r in chunk]),
            )
        removed = self.unapply(sorted(voided))
        if applied or removed:
            log.info(
                "store caught up with the WAL: %d event(s) applied, %d voided event(s) removed; applied through seq %d",
                applied,
                removed,
                self.store.applied_seq,
            )
        self.flush()

    def apply(self, payload: bytes) -> None:
        runs, seqs, rows = decode_batch(payload)
        (last_seq,) = _SEQ.unpack_from(seqs, len(seqs) - 8)
        if last_seq <= self.store.applied_seq:
            return
        entities = np.frombuffer(rows, WAL_ROW)["entity"]
        self.store.apply_rows(seqs, rows, last_seq, self._observe(runs, entities))

    def _observe(self, runs: Sequence[tuple[str, int, int]], entities: Sequence[int] | np.ndarray) -> bytes | None:
        """The store's placement record with these events (consumer.protocol.placement), when
        it changes: the apply writes it with them."""
        held = placement.observe(self._held, runs, np.asarray(entities, np.uint64))
        if held == self._held and self._recorded:
            return None
        self._held, self._recorded = held, True
        return placement.encode(held)

    def unapply(self, seqs: Sequence[int]) -> int:
        """Remove voided events the store holds; their records come from the WAL."""
        wanted = {seq for seq in seqs if seq <= self.store.applied_seq}
        if not wanted:
            return 0
        found: list[tuple[int, EventRecord]] = []
        with contextlib.suppress(FileNotFoundError):  # retention deleted a segment while it was read
            found.extend(
                (seq, record) for seq, record in replay_log(self._wal_dir, min(wanted), max(wanted)) if seq in wanted
            )
        if len(found) < len(wanted):
            log.warning(
                "%d voided event(s) are no longer in the WAL (retention deleted their segments): the store keeps them",
                len(wanted) - len(found),
            )
        return self.store.unapply(found)

    def flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        self.store.flush()
        os.write(self._output, REPORT.pack(self.store.applied_seq))
        self._flushed_at = time.monotonic()

    def serve(self, source: int) -> None:
        """Read framed messages from ``source`` until its end; flush every interval."""
        buffer = bytearray()
        while True:
            ready, _, _ = select.select([source], [], [], self._flush_interval_s)
            if ready:
                chunk = os.read(source, 1 << 20)
                if not chunk:
                    return
                buffer += chunk
                offset = 0
                while len(buffer) - offset >= FRAME.size:
                    kind, length = FRAME.unpack_from(buffer, offset)
                    if len(buffer) - offset - FRAME.size < length:
                        break
                    payload = bytes(buffer[offset + FRAME.size : offset + FRAME.size + length])
                    offset += FRAME.size + length
                    self.handle(kind, payload)
                del buffer[:offset]
            self.flush_if_due()

    def handle(self, kind: int, payload: bytes) -> None:
        if kind == BATCH:
            self.apply(payload)
        elif kind == VOID:
            seqs = array("q")
            seqs.frombytes(payload)
            self.unapply(list(seqs))
        elif kind == START:
            start = json.loads(payload)
            self.start(start["wal_id"], start["last_seq"], start["voided"])
        else:
            raise ValueError(f"unknown message type {kind}")


# Where the cores are shared, ingest (poll, fsync, acks, commits) comes first and the
# applier takes the CPU left over: the WAL is its queue, so it lags during a burst and
# catches up after, instead of slowing what producers wait for (docs/store-format.md).
WORKER_NICE = 10


def _tie_to(parent_pid: int) -> None:
    """Die with the service however it dies (PR_SET_PDEATHSIG), or at once if it is gone
    already; run at WORKER_NICE. Here, in the worker's own main, rather than in a
    preexec_fn: the service has threads by then, and a fork's child may deadlock before exec."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the service died before the line above
        os._exit(ExitCode.STORE)
    os.nice(WORKER_NICE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consumer.store.apply_worker")
    parser.add_argument("--wal-dir", type=Path, required=True)
    parser.add_argument("--store-dir", type=Path, required=True)
    parser.add_argument("--signals", required=True, help="the [[signals]] tables, as JSON")
    parser.add_argument("--flush-interval-s", type=float, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _tie_to(args.parent_pid)
    os.umask(0o077)  # RocksDB's files owner-only, as the WAL's (walcore.storage.rocks)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        schema = build_schema([SignalConfig(**signal) for signal in json.loads(args.signals)])
        store = SignalStore(RocksEngine(args.store_dir), schema)
    except Exception as exc:  # noqa: BLE001 - RocksDB raises plain Exception for I/O, lock and corruption
        log.critical("cannot open the signal store in %s: %s", args.store_dir, exc)
        return ExitCode.STORE
    worker = Worker(store, args.wal_dir, args.flush_interval_s, sys.stdout.fileno())
    try:
        worker.serve(sys.stdin.fileno())
        worker.flush()
    except StoreMismatch as exc:
        log.critical("%s (store %s)", exc, args.store_dir)
        return ExitCode.STORE
    except WalCorruption as exc:
        log.critical("the store cannot read the WAL: %s", exc)
        return ExitCode.WAL_FATAL
    except Exception as exc:  # noqa: BLE001 - RocksDB raises plain Exception: one line, not a traceback
        log.critical("applying the WAL to the store %s failed: %s", args.store_dir, exc)
        return ExitCode.STORE
    finally:
        store.close()
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
