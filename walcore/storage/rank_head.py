"""The index's *head*: each signal type's HEAD highest-ranked entities with their scores, kept
by the writer, so that a top-k reads one value instead of walking every run. Pure.

Why: a walk reads the first chunk of each of a type's runs (about 20 at a million
entities), merges them and reads the k scores it picked: 0.4-0.8 ms of a reader's CPU,
paid again by the first top-k after every catch-up (every 0.25 s while the applier
writes), and three times over by a group's fan-out. The writer, which has just ranked the
batch's changed scores anyway, keeps the head current for ~0.1 ms a type a batch (measured:
docs/performance.md).

Kept only while the type's scores only rise (``rank_runs.RankRuns.rising``): then an entity
whose score did not change in a batch ranks no higher than before, so the new HEAD highest
are among the old head and the batch's changed entities (every other entity was ranked at or
below the old head's last entry, which can only have risen: rising scores round to rising
ranks, to well within ``ranking.rank_margin``). The head therefore always holds every entity
ranked above its last entry, and all of the type's entities when it holds fewer than HEAD
(``taken`` relies on both). Once a score of the type falls, that no longer holds: the head
is dropped and readers walk.

A head is an array of shape (ROWS, n), u64, one column an entity, highest key first: its
rank key, its entity, and its score (value as f64 bits, ref_ns, count), the score the
``scores`` keyspace holds in the same state of the store.
"""

from __future__ import annotations

import numpy as np

from walcore.storage import ranking
from walcore.storage.rank_runs import KEY, descending, newest_per_entity
from walcore.storage.signals import SCORE_ROW

# Entities a head holds: a top-k of k up to ~250 from one store, of k up to ~120 from a group
# (which asks each store for 2k where partitions moved). 10 KB a type, written by each batch
# that changes it (the applier's meta writes, flushes and compactions: half of 512's).
HEAD = 256
VALUE, REF, COUNT = 2, 3, 4
ROWS = 5


def rows(keys: np.ndarray, entity: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The (ROWS, n) columns of n entries and their scores (SCORE_ROW records)."""
    return np.stack(
        (
            np.asarray(keys, np.uint64),
            np.asarray(entity, np.uint64),
            scores["value"].astype(np.float64).view(np.uint64),
            scores["ref_ns"].astype(np.uint64),
            scores["count"].astype(np.uint64),
        )
    )


def empty() -> np.ndarray:
    return np.zeros((ROWS, 0), np.uint64)


def merged(head: np.ndarray, changed: np.ndarray) -> np.ndarray | None:
    """The head after a batch that changed the scores ``changed`` (ROWS columns, highest key
    first, one an entity) of a type whose scores only rise; None when it stays as it is (no
    changed score reaches it: a full head's lowest rank less the rounding margin, so that an
    entity of the head whose unchanged rank is computed a little lower is still replaced;
    near rank 0 a rounding moves a key by far more than a few units)."""
    if head.shape[1] >= HEAD:
        bands, ranks = ranking.bands_and_ranks_of(head[KEY, -1:])
        reach = ranking.key_below(int(bands[0]), float(ranks[0]))
        changed = changed[:, : int(np.count_nonzero(changed[KEY] >= reach))]  # keys descend: a prefix
        if not changed.shape[1]:
            return None
    # Changed entries first: newest_per_entity keeps them over the head's older ones.
    both = np.concatenate((changed[:, :HEAD], head), axis=1)
    return descending(newest_per_entity(both))[:, :HEAD]


def taken(head: np.ndarray, k: int | None, floor: int | None) -> int | None:
    """How many of the head's first entries a top ``k`` (with ``floor``: of those ranked at or
    above it) takes, cut as a walk cuts (``ranking.cut``); None when the answer may reach past
    the head (a full head whose every entry is still in it)."""
    limit = head.shape[1] if floor is None else int(np.count_nonzero(head[KEY] >= floor))
    whole = head.shape[1] < HEAD or limit < head.shape[1]  # nothing ranked beyond the head counts
    if k is not None:
        cut = ranking.cut(head[KEY, :limit], k)
        if cut is not None:
            return cut
    return limit if whole else None


def scores(head: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` entries' scores, as SCORE_ROW records."""
    found = np.zeros(count, SCORE_ROW)
    found["value"] = head[VALUE, :count].view(np.float64)
    found["ref_ns"] = head[REF, :count]
    found["count"] = head[COUNT, :count]
    return found


def encode(head: np.ndarray) -> bytes:
    return np.ascontiguousarray(head).tobytes()


def decode(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, np.uint64).reshape(ROWS, -1)
