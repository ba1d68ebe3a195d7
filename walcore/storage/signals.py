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

NANOS = 1_000_000_000
_SCORE = struct.Struct(">dqQ")


class Score(NamedTuple):
    value: float  # the decayed sum at ref_ns
    ref_ns: int  # the latest event timestamp added (0: none yet)
    count: int  # events added, all time


EMPTY = Score(0.0, 0, 0)


def encode_score(score: Score) -> bytes:
    return _SCORE.pack(*score)


def decode_score(raw: bytes) -> Score:
    return Score(*_SCORE.unpack(raw))


def lambda_per_ns(half_life_seconds: float) -> float:
    return math.log(2) / (half_life_seconds * NANOS)


_new = tuple.__new__  # Score built at C speed (the applier makes one per event)
_exp = math.exp


def add(score: Score, weight: float, timestamp_ns: int, lam: float) -> Score:
    """``score`` with one more event (λ per nanosecond)."""
    value, ref_ns, count = score
    if count == 0:
        return _new(Score, (weight, timestamp_ns, 1))
    if timestamp_ns >= ref_ns:
        return _new(Score, (value * _exp(-lam * (timestamp_ns - ref_ns)) + weight, timestamp_ns, count + 1))
    return _new(Score, (value + weight * _exp(-lam * (ref_ns - timestamp_ns)), ref_ns, count + 1))


def remove(score: Score, weight: float, timestamp_ns: int, lam: float) -> Score:
    """``score`` without one event it holds (ref_ns stays: the value is still right at it)."""
    if score.count <= 1:
        return EMPTY
    return Score(score.value - weight * math.exp(-lam * (score.ref_ns - timestamp_ns)), score.ref_ns,
                 score.count - 1)


def value_at(score: Score, at_ns: int, lam: float) -> float:
    """S(at_ns) for at_ns >= ref_ns."""
    if score.count == 0:
        return 0.0
    return score.value * math.exp(-lam * (at_ns - score.ref_ns))


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
