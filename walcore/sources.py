"""Per-partition index of stored Kafka offsets: (topic, partition, offset) -> seq.

This is how a Kafka redelivery (after a crash between fsync and commit, or a
rebalance) is recognised at any distance in time, not only inside the dedup window,
and answered with the original seq. Stored as runs of consecutive offsets mapped to
consecutive seqs, so its size is about one entry per partition per batch, more when the
offsets have gaps (each rejected record between stored ones starts a new run).

Memory is bounded: 24 bytes a run (three machine-integer arrays), at most ``max_runs``
runs per partition (1,000,000 by default: 24 MB). Beyond that the oldest quarter of the
partition's runs is forgotten: a redelivery of offsets that old (far behind any commit)
falls back to the dedup window and the group handoff (consumer.ingest.ownership).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

MAX_RUNS_PER_PARTITION = 1_000_000


class _Runs:
    __slots__ = ("counts", "firsts", "seqs")

    def __init__(self) -> None:
        self.firsts = array("q")
        self.counts = array("q")
        self.seqs = array("q")


class SourceIndex:
    def __init__(self, max_runs: int = MAX_RUNS_PER_PARTITION) -> None:
        self._parts: dict[tuple[str, int], _Runs] = {}
        self._last: dict[tuple[str, int], int] = {}
        self._max_runs = max_runs

    def add(self, topic: str, partition: int, first_offset: int, count: int, first_seq: int) -> None:
        key = (topic, partition)
        runs = self._parts.get(key)
        if runs is not None and first_offset <= self._last[key] and self._overlaps(runs, first_offset, count):
            # A redelivery is never stored twice, so offsets stored again mean a new source
            # (a recreated topic, a wiped broker): the old positions no longer name anything.
            self.forget(topic, partition)
            runs = None
        if runs is None:
            runs = self._parts[key] = _Runs()
        if runs.firsts:
            end = runs.firsts[-1] + runs.counts[-1]
            if end == first_offset and runs.seqs[-1] + runs.counts[-1] == first_seq:
                runs.counts[-1] += count
                self._bump(key, first_offset + count - 1)
                return
        if runs.firsts and first_offset < runs.firsts[-1]:
            # Offsets went backwards (a seek back past what is stored): keep runs sorted.
            index = bisect_right(runs.firsts, first_offset)
            runs.firsts.insert(index, first_offset)
            runs.counts.insert(index, count)
            runs.seqs.insert(index, first_seq)
        else:
            runs.firsts.append(first_offset)
            runs.counts.append(count)
            runs.seqs.append(first_seq)
        if len(runs.firsts) > self._max_runs:
            self._forget_oldest(runs)
        self._bump(key, first_offset + count - 1)

    def _forget_oldest(self, runs: _Runs) -> None:
        """Drop the quarter of the partition's runs with the lowest seqs (the oldest)."""
        cut = sorted(runs.seqs)[len(runs.seqs) // 4]
        keep = [i for i, seq in enumerate(runs.seqs) if seq >= cut]
        runs.firsts = array("q", (runs.firsts[i] for i in keep))
        runs.counts = array("q", (runs.counts[i] for i in keep))
        runs.seqs = array("q", (runs.seqs[i] for i in keep))

    @staticmethod
    def _overlaps(runs: _Runs, first_offset: int, count: int) -> bool:
        index = bisect_right(runs.firsts, first_offset + count - 1) - 1
        return index >= 0 and runs.firsts[index] + runs.counts[index] > first_offset

    def forget(self, topic: str, partition: int) -> None:
        """Drop every position of a partition (it became a new source)."""
        self._parts.pop((topic, partition), None)
        self._last.pop((topic, partition), None)

    def _bump(self, key: tuple[str, int], last: int) -> None:
        if last > self._last.get(key, -1):
            self._last[key] = last

    def last_offset(self, topic: str, partition: int) -> int:
        """Highest stored offset of the partition, -1 when none."""
        return self._last.get((topic, partition), -1)

    def lookup(self, topic: str, partition: int, offset: int) -> int | None:
        runs = self._parts.get((topic, partition))
        if runs is None:
            return None
        index = bisect_right(runs.firsts, offset) - 1
        if index < 0 or offset >= runs.firsts[index] + runs.counts[index]:
            return None
        return runs.seqs[index] + offset - runs.firsts[index]

    def lowest_seq_from(self, topic: str, partition: int, offset: int) -> int | None:
        """The lowest seq stored at ``offset`` or after it (None: none): one look per run."""
        runs = self._parts.get((topic, partition))
        if runs is None:
            return None
        index = max(bisect_right(runs.firsts, offset) - 1, 0)
        found = [
            seq + max(0, offset - first)
            for first, count, seq in zip(runs.firsts[index:], runs.counts[index:], runs.seqs[index:])
            if first + count > offset
        ]
        return min(found, default=None)

    def last_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self._last)

    def drop_below(self, seq: int) -> None:
        """Forget runs wholly below ``seq`` (their segments were truncated). The highest
        stored offset of each partition is kept: it still says what was consumed."""
        for runs in self._parts.values():
            keep = [i for i, (s, c) in enumerate(zip(runs.seqs, runs.counts)) if s + c > seq]
            runs.firsts = array("q", (runs.firsts[i] for i in keep))
            runs.counts = array("q", (runs.counts[i] for i in keep))
            runs.seqs = array("q", (runs.seqs[i] for i in keep))
