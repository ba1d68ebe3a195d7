"""The double-buffered dedup window (carried over from the seed, with original seqs).

Two generations of ``key -> seq``. A key is a duplicate while it is in either. The
current generation becomes the previous one every ``window`` nanoseconds (or when it
holds ``max_keys // 2`` keys, which bounds memory at high rates), and the previous one
is dropped. So a stored key is recognised for at least ``window`` (unless the key cap
rotates first) and at most twice that. Keys (walcore.format._dedup_keys): the ``event_id``
(str) when the event has one (an id over 24 characters: a 128-bit BLAKE3 digest of it, so
a key's memory does not grow with the id), else ``(entity_id, signal_type, weight,
timestamp_nanos)`` packed into 26 bytes; the kinds never compare equal. The content is
never digested: a collision would silently drop someone's event.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable, Sequence
from itertools import islice


class DedupWindow:
    def __init__(self, window_ns: int, max_keys: int, now_ns: int) -> None:
        self.window_ns = window_ns
        self.max_keys = max_keys
        self._current: dict[Hashable, int] = {}
        self._previous: dict[Hashable, int] = {}
        self._started = now_ns

    @property
    def size(self) -> int:
        """Keys in both generations (read from any thread: two len() calls)."""
        return len(self._current) + len(self._previous)

    def estimated_bytes(self) -> int:
        """The tables' own size plus the keys', estimated from up to 64 of them: O(1)-ish,
        for metrics (walking millions of keys would stall the writer)."""
        tables = sys.getsizeof(self._current) + sys.getsizeof(self._previous)
        sample = list(islice(self._current, 64)) or list(islice(self._previous, 64))
        per_key = sum(map(sys.getsizeof, sample)) / len(sample) if sample else 0
        return int(tables + per_key * self.size)

    def get(self, key: Hashable) -> int | None:
        seq = self._current.get(key)
        return self._previous.get(key) if seq is None else seq

    def claim(self, keys: Sequence[Hashable], first_seq: int) -> bool:
        """Add ``keys`` as seqs ``first_seq, first_seq+1, ...`` if none is a duplicate,
        of the window or of another key in ``keys``, and return True; else change
        nothing and return False. The bulk path of every append_batch: C-level passes
        only, and no intermediate dict (the window outgrows the CPU caches, so each
        pass over it costs a cache miss per key)."""
        current = self._current
        if not current.keys().isdisjoint(keys) or not self._previous.keys().isdisjoint(keys):
            return False
        size = len(current)
        current.update(zip(keys, range(first_seq, first_seq + len(keys))))
        if len(current) == size + len(keys):
            return True
        for key in keys:  # two equal keys in the batch: take the batch back out
            current.pop(key, None)
        return False

    def advance(self, now_ns: int) -> None:
        """Rotate generations whose time (or key budget) is up. Call before lookups."""
        elapsed = now_ns - self._started
        if elapsed >= 2 * self.window_ns:
            self._previous = {}
            self._current = {}
            self._started = now_ns
        elif elapsed >= self.window_ns or len(self._current) >= self.max_keys // 2:
            self._previous = self._current
            self._current = {}
            self._started = now_ns

    def add(self, keys: dict[Hashable, int]) -> None:
        self._current.update(keys)  # dict-to-dict: reuses the stored hashes

    def preload(self, keys: Iterable[tuple[Hashable, int]]) -> None:
        """Recovery: keys stored within the last window go into the previous generation,
        so they stay duplicates for one more window from now."""
        for key, seq in keys:
            self._previous.setdefault(key, seq)
