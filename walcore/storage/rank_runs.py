"""The ``top`` keyspace as sorted runs of ranks: how a batch's changed scores become one run,
how runs merge, and how a reader walks them highest rank first.

Why runs and not one entry per score (docs/store-format.md, "The ranking"): an entry per
changed score is one more RocksDB write per event when every event is a new entity, about
a third of the applier's work; a batch's ranks written as one sorted run are a few large
writes. Readers pay instead, merging the heads of the runs, and so do merges, which keep
the runs few (an LSM's levels, here in numpy: whole runs at a time).

An entry is a rank key (ranking.rank_keys) and an entity. Entries are kept as columns
(numpy takes a column of u64s ~8x faster than a packed record): an array of shape (2, n),
u64, rows KEY and ENTITY. Layout (columns little-endian, keys big-endian so that a signal's
chunks sort by run, then chunk):

    top  [signal u16][run id u64][chunk u32]  ->  up to CHUNK entries, highest key first:
         their keys, then their entities (16 bytes an entry)
    meta top_runs + [signal u16]  ->  the signal's runs, oldest first: id u64, level u32, entries u64
    meta top_falls + [signal u16]  ->  present once a score of the type has fallen
    meta top_head + [signal u16]  ->  the type's highest entries and their scores, while
         none has fallen (walcore.storage.rank_head)

An entry is *current* while the entity's score still ranks at its key (``current``): a score
that changes gets an entry in a newer run, and its older entries go stale. A merge drops
every entry of an entity but the newest among the runs it merges. Readers drop stale
entries: while no score of the type has ever fallen (no negative weight applied, no event
un-applied: ``rising``), a score's newest entry is its highest, so an entity's first entry
in rank order is its current one; once one has, each candidate's key is compared with its
score's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from walcore.storage.engine import Batch, StorageEngine

KEY, ENTITY = range(2)
COLUMNS = 2
RUN = np.dtype([("id", "<u8"), ("level", "<u4"), ("entries", "<u8")])
CHUNK = 256  # entries a chunk: a top-100 reads about one chunk of each run
FANIN = 16  # runs of one level merged into one of the next: at most 15 of a level stay
# How far apart (in key units: 4 ulps of the rank) an entry's key and its score's key may be
# and the entry still be current: a vector log may round differently by an ulp or two where
# the same score is ranked again (another lane, another machine). 16 ulps is inside
# ranking.rank_margin (64), so an entry "current" by this much ranks where its score does.
KEY_TOLERANCE = 4
_CHUNK_KEY = struct.Struct(">HQI")
_DIRECTORY = b"top_runs"
_FALLS = b"top_falls"
_HEAD = b"top_head"
_SIGNAL = struct.Struct(">H")


def directory_key(signal: int) -> bytes:
    return _DIRECTORY + _SIGNAL.pack(signal)


def falls_key(signal: int) -> bytes:
    return _FALLS + _SIGNAL.pack(signal)


def head_key(signal: int) -> bytes:
    return _HEAD + _SIGNAL.pack(signal)


def chunk_key(signal: int, run: int, chunk: int) -> bytes:
    return _CHUNK_KEY.pack(signal, run, chunk)


def chunks_of(entries: int) -> int:
    return -(-entries // CHUNK)


def current(keys: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """A mask: the entries whose ``keys`` are their scores' keys (``scored``), to KEY_TOLERANCE."""
    mask: np.ndarray = np.where(keys > scored, keys - scored, scored - keys) <= KEY_TOLERANCE
    return mask


def descending_order(keys: np.ndarray) -> np.ndarray:
    """The positions of ``keys``, highest first; equal keys in no particular order (readers
    order near-equal ranks by their exact values). An introsort: numpy's stable sort of u64s
    (a timsort) takes 5x as long on a batch's keys (5,000: 300 against 60 us) and longer
    even on a merge's sorted runs (16 of 1,000: 370 against 240 us)."""
    order: np.ndarray = np.argsort(keys)[::-1]
    return order


def descending(columns: np.ndarray) -> np.ndarray:
    """Entries (any rows, KEY first) highest key first (``descending_order``)."""
    return np.take(columns, descending_order(columns[KEY]), axis=1)  # ~4x faster than columns[:, order]


def newest_per_entity(columns: np.ndarray) -> np.ndarray:
    """The first entry of each entity (entries given newest first), in their order: every
    later one is stale."""
    ordered = np.sort(columns[ENTITY])  # a vectorised sort: half np.unique's stable argsort
    if not (ordered[1:] == ordered[:-1]).any():
        return columns
    _, first = np.unique(columns[ENTITY], return_index=True)
    keep = np.zeros(columns.shape[1], bool)
    keep[first] = True
    return np.compress(keep, columns, axis=1)


def encode_chunks(columns: np.ndarray) -> list[bytes]:
    return [columns[:, start : start + CHUNK].tobytes() for start in range(0, columns.shape[1], CHUNK)]


class RunMissing(RuntimeError):
    """A chunk the directory names is not in the store: a damaged store (a reader's view
    never moves while it answers: consumer.serving.reader)."""


def decode_chunks(raws: Sequence[bytes | None], keys: Sequence[bytes]) -> list[np.ndarray]:
    """Each chunk's entries; RunMissing names the first absent chunk."""
    found = []
    for raw, key in zip(raws, keys):
        if raw is None:
            raise RunMissing(
                f"the top-k index names chunk {key.hex()} and the store does not hold it: a damaged "
                "store; move its directory away and the applier rebuilds it from the WAL"
            )
        found.append(np.frombuffer(raw, np.uint64).reshape(COLUMNS, -1))
    return found


def _joined(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts, axis=1) if parts else np.zeros((COLUMNS, 0), np.uint64)


class RankRuns:
    """One store's runs. The directory is read from ``meta`` at each use (one small read; a
    writer whose write failed holds no cached directory that the store does not)."""

    def __init__(self, engine: StorageEngine) -> None:
        self._engine = engine

    def directory(self, signal: int) -> np.ndarray:
        raw = self._engine.get("meta", directory_key(signal))
        return np.zeros(0, RUN) if raw is None else np.frombuffer(raw, RUN)

    def _chunk_keys(self, signal: int, run: np.void) -> list[bytes]:
        return [chunk_key(signal, int(run["id"]), chunk) for chunk in range(chunks_of(int(run["entries"])))]

    def add(self, batch: Batch, signal: int, columns: np.ndarray, *, first: bool = False) -> None:
        """Write entries (``descending``) as the signal's newest run in ``batch``, merging the
        newest runs while FANIN of them share a level. ``first``: as the signal's only run
        (its runs are being ``clear``-ed in the same batch)."""
        runs = np.zeros(0, RUN) if first else self.directory(signal).copy()
        written: dict[int, np.ndarray] = {}  # runs of this batch: not readable from the engine yet
        run_id = int(runs["id"].max()) + 1 if len(runs) else 1
        written[run_id] = columns
        runs = np.append(runs, np.array([(run_id, 0, columns.shape[1])], RUN))
        while len(runs) >= FANIN and (runs["level"][-FANIN:] == runs["level"][-1]).all():
            merging = runs[-FANIN:]
            parts = []
            for run in merging[::-1]:  # newest first: newest_per_entity keeps the newest
                if int(run["id"]) in written:
                    parts.append(written.pop(int(run["id"])))
                else:
                    keys = self._chunk_keys(signal, run)
                    parts.extend(decode_chunks(self._engine.get_many("top", keys), keys))
                    for key in keys:
                        batch.delete("top", key)
            run_id += 1
            written[run_id] = descending(newest_per_entity(_joined(parts)))
            runs = np.append(runs[:-FANIN], np.array([(run_id, int(merging["level"][-1]) + 1, 0)], RUN))
        for written_id, written_columns in written.items():
            runs["entries"][runs["id"] == written_id] = written_columns.shape[1]
            for chunk, data in enumerate(encode_chunks(written_columns)):
                batch.put("top", chunk_key(signal, written_id, chunk), data)
        batch.put("meta", directory_key(signal), runs.tobytes())

    def clear(self, batch: Batch, signal: int) -> None:
        """Drop every run of the signal (an index about to be rebuilt, one entry a score)."""
        for run in self.directory(signal):
            for key in self._chunk_keys(signal, run):
                batch.delete("top", key)
        batch.delete("meta", directory_key(signal))
        batch.delete("meta", falls_key(signal))
        batch.delete("meta", head_key(signal))

    def head(self, signal: int) -> bytes | None:
        """The signal's head as stored (walcore.storage.rank_head; None: none kept)."""
        return self._engine.get("meta", head_key(signal))

    def rising(self, signal: int) -> bool:
        """Whether no score of the type has fallen since its index was built."""
        return self._engine.get("meta", falls_key(signal)) is None

    def fell(self, batch: Batch, signals: Iterable[int]) -> None:
        """Scores of these types may have fallen in ``batch``: their entities' first entries
        in rank order may be stale from now on, and their heads no longer kept."""
        for signal in signals:
            if self.rising(signal):
                batch.put("meta", falls_key(signal), b"1")
                batch.delete("meta", head_key(signal))

    def walk(self, signal: int, floor: int | None = None) -> Iterator[np.ndarray]:
        """Every entry of the signal's runs (stale ones too), highest key first, in blocks;
        with ``floor``, only those with a key at or above it. A block is yielded once no
        unread entry can rank above its last one, so a reader that has what it needs stops
        pulling and reads no further chunk."""
        runs = self.directory(signal)
        total = [chunks_of(int(run["entries"])) for run in runs]
        read = [1] * len(runs)
        keys = [chunk_key(signal, int(run["id"]), 0) for run in runs]
        heads = decode_chunks(self._engine.get_many("top", keys), keys)
        lows = [int(head[KEY, -1]) for head in heads]  # each run's lowest key read so far
        pending = _joined(heads)
        while True:
            # Entries above the highest "lowest read" of the runs with chunks left are final.
            bottleneck = max((i for i in range(len(runs)) if read[i] < total[i]), key=lows.__getitem__, default=None)
            if bottleneck is None:
                ready, pending = pending, pending[:, :0]
            else:
                final = pending[KEY] > lows[bottleneck]
                ready, pending = np.compress(final, pending, axis=1), np.compress(~final, pending, axis=1)
            if floor is not None:
                ready = np.compress(ready[KEY] >= floor, ready, axis=1)
            if ready.shape[1]:
                yield descending(ready)
            if bottleneck is None or (floor is not None and lows[bottleneck] < floor):
                return  # nothing unread, or everything unread ranks below the floor
            key = chunk_key(signal, int(runs["id"][bottleneck]), read[bottleneck])
            (chunk,) = decode_chunks(self._engine.get_many("top", [key]), [key])
            read[bottleneck] += 1
            lows[bottleneck] = int(chunk[KEY, -1])
            pending = np.concatenate((pending, chunk), axis=1)
