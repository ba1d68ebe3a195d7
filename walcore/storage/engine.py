"""The storage engine interface, and the in-memory backend (sorted; for tests).

An engine holds isolated keyspaces (walcore.storage.KEYSPACES) of byte keys in byte
order. ``write`` applies a batch atomically: after a crash either all of it or none of
it is there. ``flush`` makes everything written so far durable; what was written after
the last flush may be lost in a crash (the WAL replays it: walcore.storage.store).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

# events: one entry per applied event; scores: one aggregate per (entity, signal type);
# top: the scores' ranks as sorted runs, for top-k reads (walcore.storage.rank_runs);
# meta: the store's own state (the last applied seq, the WAL it follows).
KEYSPACES = ("events", "scores", "top", "meta")


class Op(NamedTuple):
    keyspace: str
    key: bytes
    value: bytes | None  # None: delete


class WriteBatch:
    """Puts and deletes applied together by StorageEngine.write."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def put(self, keyspace: str, key: bytes, value: bytes) -> None:
        self.ops.append(Op(keyspace, key, value))

    def put_many(self, keyspace: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        self.ops.extend(Op(keyspace, key, value) for key, value in items)

    def delete(self, keyspace: str, key: bytes) -> None:
        self.ops.append(Op(keyspace, key, None))


class Batch(Protocol):
    """Puts and deletes to apply together (an engine's own, from ``StorageEngine.batch``)."""

    def put(self, keyspace: str, key: bytes, value: bytes) -> None: ...

    def put_many(self, keyspace: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        """``put`` of each (key, value), in any order the engine likes (a key given twice:
        the later value wins)."""

    def delete(self, keyspace: str, key: bytes) -> None: ...


class StorageEngine(Protocol):
    def get(self, keyspace: str, key: bytes) -> bytes | None: ...

    def get_many(self, keyspace: str, keys: Iterable[bytes]) -> list[bytes | None]:
        """``get`` of each key, in their order: one call for a whole batch's lookups."""

    def put(self, keyspace: str, key: bytes, value: bytes) -> None: ...
    def delete(self, keyspace: str, key: bytes) -> None: ...

    def scan(self, keyspace: str, start: bytes, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` (no upper bound when ``end`` is None), in key order."""

    def batch(self) -> Batch:
        """An empty batch for ``write`` (the engine's own kind: no copy at write time)."""

    def write(self, batch: Batch) -> None:
        """Apply every op of the batch atomically, in order."""

    def flush(self) -> None:
        """Make everything written so far durable."""

    def close(self) -> None: ...


class MemoryEngine:
    """Sorted keys per keyspace, in memory: the reference backend for tests. ``flush``
    keeps a copy, and ``crash()`` returns to it (what a durable backend would hold)."""

    def __init__(self) -> None:
        self._data: dict[str, dict[bytes, bytes]] = {name: {} for name in KEYSPACES}
        self._keys: dict[str, list[bytes]] = {name: [] for name in KEYSPACES}
        self._flushed = _copied(self._data)

    def get(self, keyspace: str, key: bytes) -> bytes | None:
        return self._data[keyspace].get(key)

    def get_many(self, keyspace: str, keys: Iterable[bytes]) -> list[bytes | None]:
        return list(map(self._data[keyspace].get, keys))

    def put(self, keyspace: str, key: bytes, value: bytes) -> None:
        entries = self._data[keyspace]
        if key not in entries:
            bisect.insort(self._keys[keyspace], key)
        entries[key] = value

    def delete(self, keyspace: str, key: bytes) -> None:
        if self._data[keyspace].pop(key, None) is not None:
            keys = self._keys[keyspace]
            del keys[bisect.bisect_left(keys, key)]

    def scan(self, keyspace: str, start: bytes, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        keys = self._keys[keyspace]
        entries = self._data[keyspace]
        stop = len(keys) if end is None else bisect.bisect_left(keys, end)
        for key in keys[bisect.bisect_left(keys, start) : stop]:
            yield key, entries[key]

    def batch(self) -> WriteBatch:
        return WriteBatch()

    def write(self, batch: WriteBatch) -> None:
        for keyspace, key, value in batch.ops:
            if value is None:
                self.delete(keyspace, key)
            else:
                self.put(keyspace, key, value)

    def flush(self) -> None:
        self._flushed = _copied(self._data)

    def crash(self) -> None:
        """Lose everything written since the last flush."""
        self._data = _copied(self._flushed)
        self._keys = {name: sorted(entries) for name, entries in self._data.items()}

    def close(self) -> None:
        pass


def _copied(data: dict[str, dict[bytes, bytes]]) -> dict[str, dict[bytes, bytes]]:
    return {name: dict(entries) for name, entries in data.items()}
