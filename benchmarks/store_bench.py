"""The storage engine decision: RocksDB (rocksdict) versus LMDB, on the applier's load.

Both behind the same StorageEngine interface, both crash-safe as configured (RocksDB:
atomic write batches through its own log, synced by flush(); LMDB: one transaction per
batch, synced at commit with metasync off, which keeps integrity). The load is the e2e
benchmark's stream: N events (default 1,000,000) over ~N distinct entities, 5 signal
types, applied by SignalStore in batches of 5,000 (one atomic write each) with a flush
every 20 batches, timed until the writer is closed (RocksDB then writes its memtables to
files: a running applier pays that whenever they fill). The batches are what the applier
process receives (seqs and the WAL's rows; SignalStore.apply_rows). Then single-entity
queries (decayed scores, window counts, velocity) for random stored entities, RocksDB's
through a read-only open as `tidal-consumer query` makes. Prints events/s applied and
query p50/p99 per engine, and their ratio (each is the other's baseline, same run).
JSON: benchmarks/results/store_bench.json.

Run: .venv/bin/python benchmarks/store_bench.py [--events N] [--queries Q]
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import lmdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from results_io import save  # noqa: E402

from consumer.config import Settings  # noqa: E402
from walcore.format import CONTENT_KEY  # noqa: E402
from walcore.storage.engine import KEYSPACES, StorageEngine, WriteBatch  # noqa: E402
from walcore.storage.rocks import RocksEngine  # noqa: E402
from walcore.storage.store import SignalStore  # noqa: E402

BATCH = 5000
FLUSH_EVERY = 20


class LmdbEngine:
    """LMDB as a StorageEngine: a named database per keyspace, a transaction per batch."""

    def __init__(self, path: Path) -> None:
        self._env = lmdb.open(str(path), max_dbs=len(KEYSPACES), map_size=1 << 36, metasync=False, sync=True)
        self._dbs = {name: self._env.open_db(name.encode()) for name in KEYSPACES}

    def get(self, keyspace: str, key: bytes) -> bytes | None:
        with self._env.begin(db=self._dbs[keyspace]) as txn:
            return txn.get(key)

    def get_many(self, keyspace: str, keys: Iterable[bytes]) -> list[bytes | None]:
        with self._env.begin(db=self._dbs[keyspace]) as txn:
            return list(map(txn.get, keys))

    def put(self, keyspace: str, key: bytes, value: bytes) -> None:
        with self._env.begin(write=True, db=self._dbs[keyspace]) as txn:
            txn.put(key, value)

    def delete(self, keyspace: str, key: bytes) -> None:
        with self._env.begin(write=True, db=self._dbs[keyspace]) as txn:
            txn.delete(key)

    def scan(self, keyspace: str, start: bytes, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        with self._env.begin(db=self._dbs[keyspace]) as txn:
            cursor = txn.cursor()
            found = []
            if cursor.set_range(start):
                for key, value in cursor:
                    if end is not None and key >= end:
                        break
                    found.append((key, value))
        return iter(found)

    def batch(self) -> WriteBatch:
        return WriteBatch()

    def write(self, batch: WriteBatch) -> None:
        with self._env.begin(write=True) as txn:
            for keyspace, key, value in batch.ops:
                if value is None:
                    txn.delete(key, db=self._dbs[keyspace])
                else:
                    txn.put(key, value, db=self._dbs[keyspace])

    def flush(self) -> None:
        self._env.sync(True)

    def close(self) -> None:
        self._env.close()


class Stream(NamedTuple):
    batches: list[tuple[bytes, bytes, int]]  # (seqs, WAL rows, last seq): what the applier process receives
    entities: list[int]  # each event's


def stream(events: int) -> Stream:
    now = time.time_ns()
    entities = [i * 7919 % 1_000_003 for i in range(events)]
    batches = []
    for first in range(0, events, BATCH):
        positions = range(first, min(events, first + BATCH))
        seqs = array("q", (i + 1 for i in positions))
        rows = b"".join(
            CONTENT_KEY.pack(entities[i], 1 + i % 5, 1.0 + i % 9, now - (events - i) * 1000) for i in positions
        )
        batches.append((seqs.tobytes(), rows, seqs[-1]))
    return Stream(batches, entities)


def apply_stream(store: SignalStore, events: Stream, placement: bytes | None = None) -> None:
    """What is timed: every batch applied as the applier process applies it, a flush every
    FLUSH_EVERY batches, then the last flush and the close (memtables written to files).
    ``placement``: the store's placement record, written with the last batch."""
    for n, (seqs, rows, last_seq) in enumerate(events.batches):
        store.apply_rows(seqs, rows, last_seq, placement if n == len(events.batches) - 1 else None)
        if n % FLUSH_EVERY == FLUSH_EVERY - 1:
            store.flush()
    store.flush()
    store.close()


def run(writer: StorageEngine, reader: Callable[[], StorageEngine], events: Stream, queries: int) -> dict:
    """Apply ``events`` through ``writer`` and close it (its memtables flushed to files: the
    cost a running applier pays whenever they fill is in the rate), then query through
    ``reader`` (RocksDB: a read-only open, as `tidal-consumer query` opens it)."""
    store = SignalStore(writer, Settings().signal_schema())
    gc.collect()
    started = time.perf_counter()
    apply_stream(store, events)
    applied_s = time.perf_counter() - started
    querier = SignalStore(reader(), Settings().signal_schema())
    rng = random.Random(1)
    at = time.time_ns()
    latencies = []
    for _ in range(queries):
        entity = events.entities[rng.randrange(len(events.entities))]
        t0 = time.perf_counter()
        found = querier.query(entity, at)
        latencies.append(time.perf_counter() - t0)
        assert found, entity
    latencies.sort()
    querier.close()
    return {
        "events_per_s_applied": round(len(events.entities) / applied_s),
        "query_p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "query_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20_000)
    args = parser.parse_args()
    events = stream(args.events)
    entities = len(set(events.entities))
    print(f"{args.events:,} events over {entities:,} entities")
    results: dict = {"events": args.events, "entities": entities, "batch": BATCH}
    workdir = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        engines = (
            ("rocksdb", lambda: RocksEngine(workdir / "rocks"), lambda: RocksEngine(workdir / "rocks", read_only=True)),
            ("lmdb", lambda: LmdbEngine(workdir / "lmdb"), lambda: LmdbEngine(workdir / "lmdb")),
        )
        for name, make, reader in engines:
            figures = run(make(), reader, events, args.queries)
            size = sum(f.stat().st_size for f in workdir.rglob("*") if f.is_file())
            figures["disk_bytes"] = size
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir()
            results[name] = figures
            print(
                f"{name:>8}: applied {figures['events_per_s_applied']:,} events/s; query p50 "
                f"{figures['query_p50_ms']} ms, p99 {figures['query_p99_ms']} ms; {size / 2**20:,.0f} MiB on disk"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["rocksdb_over_lmdb_apply"] = round(
        results["rocksdb"]["events_per_s_applied"] / results["lmdb"]["events_per_s_applied"], 2
    )
    print(f"apply rate, rocksdb / lmdb: {results['rocksdb_over_lmdb_apply']}")
    save("store_bench", results)


if __name__ == "__main__":
    main()
