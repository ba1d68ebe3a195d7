"""The aggregates of one (entity, signal type), as pure functions (docs/store-format.md).

Decayed score at time t: S(t) = Σ wᵢ·e^(-λ(t - tsᵢ)), λ = ln 2 / half-life. It is kept as
``(value, ref_ns)`` with value = S(ref_ns) and ref_ns the latest event timestamp seen, so
S(t) = value·e^(-λ(t - ref_ns)) for any t ≥ ref_ns: an event at ts ≥ ref decays the value
forward to ts and adds w; an out-of-order event (ts < ref) adds w·e^(-λ(ref - ts)). Every
factor is ≤ 1, so nothing overflows however old the stream. Removing an event (a voided
seq) subtracts the same term. Window counts and velocity come from the stored events
(walcore.storage.store), exact at any time.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from walcore.storage.keys import split_fixed

NANOS = 1_000_000_000
_SCORE = struct.Struct(">dQQ")  # value, ref_ns, count


class Score(NamedTuple):
    value: float  # the decayed sum at ref_ns
    ref_ns: int  # the latest event timestamp added (0: none yet)
    count: int  # type: ignore[assignment]  # events added, all time (shadows tuple.count, on purpose)


EMPTY = Score(0.0, 0, 0)


def encode_score(score: Score) -> bytes:
    return _SCORE.pack(*score)


def decode_score(raw: bytes) -> Score:
    return Score(*_SCORE.unpack(raw))


def lambda_per_ns(half_life_seconds: float) -> float:
    return math.log(2) / (half_life_seconds * NANOS)


# A batch's scores as columns: one record per (entity, type), the stored layout.
SCORE_ROW = np.dtype([("value", ">f8"), ("ref_ns", ">u8"), ("count", ">u8")])
assert SCORE_ROW.itemsize == _SCORE.size


def decode_scores(raws: Sequence[bytes | None]) -> np.ndarray:
    """Stored scores (None: the (entity, type) has none yet, EMPTY) as SCORE_ROW records."""
    scores = np.zeros(len(raws), SCORE_ROW)
    held = [raw is not None for raw in raws]
    if any(held):
        scores[np.array(held)] = np.frombuffer(b"".join(raw for raw in raws if raw is not None), SCORE_ROW)
    return scores


def encode_scores(scores: np.ndarray) -> list[bytes]:
    return split_fixed(scores.astype(SCORE_ROW, copy=False).tobytes(), SCORE_ROW.itemsize)


def add_events(
    scores: np.ndarray, groups: np.ndarray, weights: np.ndarray, timestamps: np.ndarray, lams: np.ndarray
) -> np.ndarray:
    """``scores`` (SCORE_ROW records) with events added: event i (weight, timestamp ns, λ per
    ns) goes to ``scores[groups[i]]``. The batch form of adding events one by one: the new
    ref_ns is the latest timestamp, the old value and each event's weight decay to it."""
    ref = scores["ref_ns"].astype(np.uint64)
    np.maximum.at(ref, groups, timestamps)
    lam_of_group = np.empty(len(scores))
    lam_of_group[groups] = lams
    # Differences in integer nanoseconds first (exact), then to float: every exponent is <= 0.
    terms = weights * np.exp(-lams * (ref[groups] - timestamps).astype(np.float64))
    added = np.empty(len(scores), SCORE_ROW)
    added["value"] = scores["value"] * np.exp(
        -lam_of_group * (ref - scores["ref_ns"]).astype(np.float64)
    ) + np.bincount(groups, terms, minlength=len(scores))
    added["ref_ns"] = ref
    added["count"] = scores["count"] + np.bincount(groups, minlength=len(scores)).astype(np.uint64)
    return added


def remove(score: Score, weight: float, timestamp_ns: int, lam: float) -> Score:
    """``score`` without one event it holds (ref_ns stays: the value is still right at it)."""
    if score.count <= 1:
        return EMPTY
    return Score(score.value - weight * math.exp(-lam * (score.ref_ns - timestamp_ns)), score.ref_ns, score.count - 1)


def value_at(score: Score, at_ns: int, lam: float) -> float:
    """S(at_ns) for at_ns >= ref_ns."""
    if score.count == 0:
        return 0.0
    return score.value * math.exp(-lam * (at_ns - score.ref_ns))


def values_at(scores: np.ndarray, at_ns: int, lam: float) -> list[float]:
    """``value_at`` of each SCORE_ROW record (at_ns >= every ref_ns), at once: a top-k's
    scores (numpy's exp agrees with math.exp to an ulp)."""
    ages = (np.uint64(at_ns) - scores["ref_ns"].astype(np.uint64)).astype(np.float64)
    values: list[float] = np.where(scores["count"] > 0, scores["value"] * np.exp(-lam * ages), 0.0).tolist()
    return values


def decayed_sum(events: Sequence[tuple[int, float]], at_ns: int, lam: float) -> float:
    """S(at_ns) from (timestamp, weight) pairs with timestamp <= at_ns: the definition,
    used where the kept value cannot answer (a time before the latest event)."""
    return math.fsum(weight * math.exp(-lam * (at_ns - ts)) for ts, weight in events if ts <= at_ns)


def window_counts(timestamps: Sequence[int], at_ns: int, windows_seconds: Sequence[int]) -> dict[int, int]:
    """Per window W (seconds): how many of the sorted ``timestamps`` lie in (at - W, at]."""
    end = bisect.bisect_right(timestamps, at_ns)
    return {window: end - bisect.bisect_right(timestamps, at_ns - window * NANOS) for window in windows_seconds}


class Velocity(NamedTuple):
    """Over the signal's smallest window W: events per hour in (at - W, at], and the change
    from the window before it, (at - 2W, at - W] (positive: accelerating)."""

    per_hour: float
    change: int


def velocity(timestamps: Sequence[int], at_ns: int, window_seconds: int) -> Velocity:
    end = bisect.bisect_right(timestamps, at_ns)
    middle = bisect.bisect_right(timestamps, at_ns - window_seconds * NANOS)
    start = bisect.bisect_right(timestamps, at_ns - 2 * window_seconds * NANOS)
    recent, before = end - middle, middle - start
    return Velocity(recent * 3600 / window_seconds, recent - before)
