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

from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    ColumnFamily,
    MemtableFactory,
    Options,
    Rdict,
    ReadOptions,
    SliceTransform,
    WriteOptions,
)
from rocksdict import WriteBatch as RocksBatch

from walcore.storage.engine import KEYSPACES

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
        # In key order: the memtable (a skip list) takes a batch of random keys about a
        # quarter faster sorted, each insert landing near the one before (store_bench).
        # A stable sort, so a key given twice keeps its later value last.
        put, handle = self.rocks.put, self._handles[keyspace]
        for key, value in sorted(items, key=_KEY):
            put(key, value, handle)

    def delete(self, keyspace: str, key: bytes) -> None:
        self.rocks.delete(key, self._handles[keyspace])


# The writer's memtables, by keyspace (read-only opens, for queries, replay into RocksDB's
# default skip list, where every read is cheap). A skip list of a million random keys
# costs a cache-missing search per insert: ~2 µs an event for the scores alone
# (benchmarks/store_bench.py), the applier's largest cost.
# - events: only appended to in bulk, read back only to un-apply a voided event (rare):
#   a vector, appended to and sorted once when flushed to a file.
# - scores: read and rewritten by key each batch: a hash table of linked lists, keyed by
#   the whole key (a prefix extractor longer than any key).
# Either costs a sort to iterate: the writer reads events only through get_many (one
# iterator for the lot), and scans in total order (correct, slow on a full memtable; the
# writer does not scan in service).
_APPENDED = frozenset({"events"})
_HASHED = frozenset({"scores"})
_WHOLE_KEY = 128  # bytes (rocksdict's most): longer than any key, so a "prefix" is the whole key
_HASH_BUCKETS = 1 << 20  # ~ the score entries a 64 MiB memtable holds (8 MiB of bucket heads)


def _family_options(keyspace: str, *, read_only: bool) -> Options:
    """Most score reads miss (a new entity): bloom filters answer a miss without a search
    in the files (and in the memtable of a skip list)."""
    options = Options(raw_mode=True)
    if keyspace in _APPENDED and not read_only:
        options.set_memtable_factory(MemtableFactory.vector())
    elif keyspace in _HASHED and not read_only:
        options.set_prefix_extractor(SliceTransform.create_max_len_prefix(_WHOLE_KEY))
        options.set_memtable_factory(MemtableFactory.hash_link_list(_HASH_BUCKETS))
    else:
        options.set_memtable_prefix_bloom_ratio(0.1)
        options.set_memtable_whole_key_filtering(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    return options


class RocksEngine:
    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        """``read_only``: open beside the process that writes it (a query while the
        service runs): a consistent view as of the open, no lock taken."""
        options = Options(raw_mode=True)
        options.create_if_missing(not read_only)
        options.create_missing_column_families(not read_only)
        options.set_allow_concurrent_memtable_write(False)  # a vector memtable takes one writer (we have one)
        if read_only and not Path(path, "CURRENT").is_file():
            raise FileNotFoundError(f"no signal store in {path}")
        families = {name: _family_options(name, read_only=read_only) for name in KEYSPACES}
        self._db = Rdict(str(path), options, column_families=families,
                         access_type=AccessType.read_only() if read_only else AccessType.read_write())
        self._families = {name: self._db.get_column_family(name) for name in KEYSPACES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in KEYSPACES}
        self._write_options = WriteOptions()
        self._scan_options = ReadOptions()
        self._scan_options.set_total_order_seek(True)  # whatever the memtable, every key in order

    def get(self, keyspace: str, key: bytes) -> bytes | None:
        return self._families[keyspace].get(key)

    def get_many(self, keyspace: str, keys: Iterable[bytes]) -> list[bytes | None]:
        if keyspace not in _APPENDED:
            # Point reads one by one: rocksdict's multi-get is slower on memtable-resident keys.
            return list(map(self._families[keyspace].get, keys))
        # One iterator, sought to each key in order: a vector memtable is sorted once for
        # the lot, not once per key.
        wanted = list(keys)
        found: dict[bytes, bytes] = {}
        iterator = self._families[keyspace].iter(self._scan_options)
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
        iterator = self._families[keyspace].iter(self._scan_options)
        iterator.seek(start)
        while iterator.valid():
            key = iterator.key()
            if end is not None and key >= end:
                return
            yield key, iterator.value()
            iterator.next()

    def batch(self) -> _Batch:
        return _Batch(self._handles)

    def write(self, batch: _Batch) -> None:
        self._db.write(batch.rocks, self._write_options)

    def flush(self) -> None:
        self._db.flush_wal(True)

    def close(self) -> None:
        # RocksDB's lock is released only once no column family object refers to the DB.
        self._families.clear()
        self._handles.clear()
        self._db.close()
        del self._db
