"""The on-disk StorageEngine: RocksDB through rocksdict, one column family per keyspace.

Why RocksDB (benchmarks/store_bench.py; docs/store-format.md has the figures): an LSM
takes the applier's random-key writes as sequential log appends, where LMDB's B-tree
copies pages and fsyncs each transaction to stay crash-safe.

Atomicity and durability: a write batch spans the column families and goes through
RocksDB's own log in one record, so after a crash it is there whole or not at all.
Writes are not synced one by one; ``flush`` syncs RocksDB's log, which is the store's
durability point (the WAL is checkpointed only up to what a flush covered).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import cast

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    ColumnFamily,
    DBCompressionType,
    MemtableFactory,
    Options,
    Rdict,
    WriteOptions,
)
from rocksdict import WriteBatch as RocksBatch

from walcore.files import DIR_MODE, FILE_MODE
from walcore.storage.engine import KEYSPACES, Batch

_KEY = itemgetter(0)


class _Batch:
    """A RocksDB write batch spanning the column families."""

    __slots__ = ("_handles", "rocks")

    def __init__(self, handles: dict[str, ColumnFamily]) -> None:
        self._handles = handles
        self.rocks = RocksBatch(raw_mode=True)

    def put(self, keyspace: str, key: bytes, value: bytes) -> None:
        self.rocks.put(key, value, self._handles[keyspace])

    def put_many(self, keyspace: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        # A skip-list memtable takes a batch of random keys faster in key order, each
        # insert landing near the one before (docs/store-format.md); a vector memtable
        # (_APPENDED) sorts once at its flush, so its keys go as they come. A stable sort,
        # so a key given twice keeps its later value last.
        put, handle = self.rocks.put, self._handles[keyspace]
        for key, value in items if keyspace in _APPENDED else sorted(items, key=_KEY):
            put(key, value, handle)

    def delete(self, keyspace: str, key: bytes) -> None:
        self.rocks.delete(key, self._handles[keyspace])


# Keyspaces the applier only appends to in bulk and reads back only to un-apply a voided
# event (rare): their writer keeps the memtable as a vector.
_APPENDED = frozenset({"events"})
# Keyspaces read only by keys that are there (the ranking's chunks, named by their
# directory): a bloom filter would be built for nothing, and the chunks (ranks: random
# bits) hardly compress.
_UNFILTERED = frozenset({"top"})


def _family_options(keyspace: str, *, read_only: bool) -> Options:
    """Most score reads miss (a new entity): bloom filters answer a miss without a search,
    in the memtable and in the files.

    The writer's ``events`` memtable is a vector, not a skip list: an insert is an append
    and the sort happens once, when the memtable is flushed to a file, where a skip list
    pays a cache-missing search per random key. A read of that memtable sorts a copy of
    it, so the writer reads events only through get_many (one iterator for the lot).
    Read-only opens (queries) replay into a skip list, where reads are cheap. The scores
    keep a skip list: they are read every batch, and RocksDB's hash memtables cost more to
    flush than a skip list costs to fill. (The measurements: docs/store-format.md.)"""
    options = Options(raw_mode=True)
    if keyspace in _APPENDED and not read_only:
        options.set_memtable_factory(MemtableFactory.vector())
    else:
        options.set_memtable_prefix_bloom_ratio(0.1)
        options.set_memtable_whole_key_filtering(True)
    table = BlockBasedOptions()
    if keyspace in _UNFILTERED:
        options.set_compression_type(DBCompressionType.none())
    else:
        table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    return options


def _owner_only(path: Path) -> None:
    """The store's directory and files as private as the WAL's (walcore.files): 0700 and
    0600. RocksDB creates files by the process umask, which the worker sets to 077
    (consumer.store.apply_worker); this also tightens a store made before that, wherever
    ``[store] dir`` puts it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
            os.chmod(entry.path, FILE_MODE)


class RocksEngine:
    def __init__(self, path: str | Path, *, read_only: bool = False, secondary: str | Path | None = None) -> None:
        """``read_only``: open beside the process that writes it (a query while the
        service runs): a consistent view as of the open, no lock taken. ``secondary``: a
        reader that follows the writer (``catch_up``), keeping its own small files in that
        directory (the service's query API)."""
        reader = read_only or secondary is not None
        options = Options(raw_mode=True)
        options.create_if_missing(not reader)
        options.create_missing_column_families(not reader)
        options.set_allow_concurrent_memtable_write(False)  # a vector memtable takes one writer (we have one)
        if secondary is not None:
            options.set_max_open_files(-1)  # RocksDB's requirement for a secondary instance
            # Its info log lines come with every catch-up: bounded to 2 files of 1 MiB.
            options.set_max_log_file_size(1 << 20)
            options.set_keep_log_file_num(2)
            # RocksDB starts max_file_opening_threads (16) threads to load table files at
            # every catch-up, new files or none: ~50 threads started and joined, under the
            # interpreter lock (rocksdict holds it). That was all of an idle catch-up's ~3 ms
            # and ~6.5 of a busy one's ~8 (1,000 events/s written). One loads them inline:
            # 0.04 and 1.7 ms (docs/performance.md). The open loads its files serially.
            options.set_max_file_opening_threads(1)
        if reader and not Path(path, "CURRENT").is_file():
            raise FileNotFoundError(f"no signal store in {path}")
        if not reader:
            _owner_only(Path(path))
        families = {name: _family_options(name, read_only=reader) for name in KEYSPACES}
        access = (
            AccessType.secondary(str(secondary))
            if secondary is not None
            else AccessType.read_only()
            if read_only
            else AccessType.read_write()
        )
        self._db = Rdict(str(path), options, column_families=families, access_type=access)
        self._families = {name: self._db.get_column_family(name) for name in KEYSPACES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in KEYSPACES}
        self._write_options = WriteOptions()
        self._reader = reader

    def catch_up(self) -> bool:
        """A secondary reader: see everything the writer has written so far. Whether that
        moved the view (the writer wrote since the last catch-up; a flush or compaction
        moves data between files, not the view)."""
        before = self._db.latest_sequence_number()
        self._db.try_catch_up_with_primary()
        return bool(self._db.latest_sequence_number() != before)

    def get(self, keyspace: str, key: bytes) -> bytes | None:
        return self._families[keyspace].get(key)

    def get_many(self, keyspace: str, keys: Iterable[bytes]) -> list[bytes | None]:
        if self._reader:
            # A reader's keys are mostly in files: one multi-get, about half the time of
            # point reads (240 scores: 0.24 against 0.46 ms).
            return cast("list[bytes | None]", self._families[keyspace].get(list(keys)))
        if keyspace not in _APPENDED:
            # Point reads one by one: rocksdict's multi-get is slower on memtable-resident keys.
            return list(map(self._families[keyspace].get, keys))
        # One iterator, sought to each key in order: a vector memtable is sorted once for
        # the lot, not once per key.
        wanted = list(keys)
        found: dict[bytes, bytes] = {}
        iterator = self._families[keyspace].iter()
        for key in sorted(set(wanted)):
            iterator.seek(key)
            if iterator.valid() and iterator.key() == key:
                found[key] = iterator.value()
        return [found.get(key) for key in wanted]

    def put(self, keyspace: str, key: bytes, value: bytes) -> None:
        self._families[keyspace].put(key, value)

    def delete(self, keyspace: str, key: bytes) -> None:
        self._families[keyspace].delete(key)

    def scan(self, keyspace: str, start: bytes, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        iterator = self._families[keyspace].iter()
        iterator.seek(start)
        while iterator.valid():
            key = iterator.key()
            if end is not None and key >= end:
                return
            yield key, iterator.value()
            iterator.next()

    def batch(self) -> _Batch:
        return _Batch(self._handles)

    def write(self, batch: Batch) -> None:
        self._db.write(cast(_Batch, batch).rocks, self._write_options)  # one of this engine's batches

    def flush(self) -> None:
        self._db.flush_wal(True)

    def close(self) -> None:
        # RocksDB's lock is released only once no column family object refers to the DB.
        self._families.clear()
        self._handles.clear()
        self._db.close()
        del self._db
