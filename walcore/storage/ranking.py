"""Ranking by decayed score with forward decay: a rank per score that never moves. Pure.

A score kept as (value, ref) is worth value·e^(-λ(t - ref)) at any t ≥ ref (signals.py).
For value > 0 that is ordered, for every such t at once, by ln(value) + λ·ref (Cormode,
Shkapenyuk, Srivastava, Xu, "Forward decay", ICDE 2009): the common factor e^(-λt) drops
out of every comparison. So a rank built from it never has to move as time passes, and
"the k highest scores at t" are the k highest ranks.

Negative weights make negative values; there the larger magnitude is the lower score, so
the rank is negated. A score's *rank key* is therefore one u64: a band in its top two bits,
2 for value > 0, 1 for value == 0, 0 for value < 0, then the rank as an order-preserving
62-bit number (the f64's order-preserving bits less their two lowest). Descending keys are
descending scores at every t ≥ every ref, within one signal type (the ``top`` keyspace keeps
them in sorted runs: walcore.storage.rank_runs).

Ranks are floats, and the key drops two bits of them: two scores closer than a few ulps of
λ·ref may come out in the wrong order, so a reader takes the keys within ``rank_margin`` of
the k-th as well and sorts the candidates by their exact values (walcore.storage.store).
"""

from __future__ import annotations

import math
import struct

import numpy as np

_SIGN = 1 << 63
_BAND_SHIFT = 62
_RANK_MASK = (1 << _BAND_SHIFT) - 1
NEGATIVE, ZERO, POSITIVE = 0, 1, 2


def band_and_rank(value: float, ref_ns: int, lam: float) -> tuple[int, float]:
    """The (band, rank) of a score kept as ``value`` at ``ref_ns``: larger is a higher score.
    Also a threshold: a key at or above ``band_and_rank(s, t, λ)`` is worth at least s at t
    (within ``rank_margin``: λ·ref may round differently from the array form's)."""
    if value > 0:
        return POSITIVE, math.log(value) + lam * ref_ns
    if value < 0:
        return NEGATIVE, -(math.log(-value) + lam * ref_ns)
    return ZERO, 0.0


def rank_margin(rank: float) -> float:
    """How far below a rank another key may sit and still be the higher score. A key's rank
    is off by at most ~10 ulps of the rank: ln (a vector log, a few ulps of |ln value| <= 745),
    ref to float and λ·ref (an ulp), the sum (half an ulp), the key's two dropped bits (4
    ulps); and |rank| >= λ·ref - 745, so where λ·ref is large the rank is as large. 2^-46 of
    the rank (64 ulps) and 1e-9 (near 0) leave that several times over. (Until 2026-12-03
    2^-40: every tie within it is one more score read for a top-k.)"""
    return 1e-9 + abs(rank) * 2.0**-46


def key_below(band: int, rank: float) -> int:
    """The key ``rank_margin`` below (band, rank): every key that may rank at or above it,
    rounding allowed for, is at or above this one."""
    return rank_key(band, rank - rank_margin(rank))


def cut(keys: np.ndarray, k: int) -> int | None:
    """How many of ``keys`` (descending, one an entity) a top ``k`` takes: the first k and
    those after them within ``rank_margin`` of the k-th (their exact values decide the
    order); None when there are no more than k, or every one after the k-th is within the
    margin (a key not among them might be too)."""
    if len(keys) <= k:
        return None
    bands, ranks = bands_and_ranks_of(keys[k - 1 :])
    kth_band, kth_rank = int(bands[0]), float(ranks[0])
    # Keys descend, so past the k-th the margin holds for a prefix, then never again.
    beyond = (bands != kth_band) | (ranks < kth_rank - rank_margin(kth_rank))
    return k - 1 + int(np.argmax(beyond)) if beyond.any() else None


def _rank_bits(rank: float) -> int:
    """An f64 as a u64 whose unsigned order is the float's order."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", rank))
    return int(bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits & _SIGN else bits | _SIGN)


def rank_key(band: int, rank: float) -> int:
    """The u64 key of (band, rank): keys order as (band, rank) do, to 2^-50 of the rank."""
    return band << _BAND_SHIFT | _rank_bits(rank) >> 2


def bands_and_ranks_of(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (band, rank) of each key (``rank_key`` undone, the rank to 2^-50 of itself): (bands, ranks as f64)."""
    bits = (keys & np.uint64(_RANK_MASK)) << np.uint64(2)
    bits = np.where(bits & np.uint64(_SIGN), bits ^ np.uint64(_SIGN), ~bits)
    return keys >> np.uint64(_BAND_SHIFT), bits.view(np.float64)


def rank_keys(values: np.ndarray, refs: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """``rank_key(*band_and_rank(value, ref, λ))`` of each position, as u64s. A vector log may
    differ from math.log by an ulp: within ``rank_margin``, and a key is only ever compared,
    never looked up."""
    positive, negative = values > 0, values < 0
    bands = np.where(positive, POSITIVE, np.where(negative, NEGATIVE, ZERO)).astype(np.uint64)
    magnitudes = np.abs(values).astype(np.float64)
    magnitudes[magnitudes == 0] = 1.0  # zero band: rank 0 below
    magnitude = np.log(magnitudes) + lams * refs.astype(np.float64)
    rank = np.where(positive, magnitude, np.where(negative, -magnitude, 0.0))
    bits = rank.view(np.uint64)
    ordered = np.where(bits & np.uint64(_SIGN), ~bits, bits | np.uint64(_SIGN))
    keys: np.ndarray = bands << np.uint64(_BAND_SHIFT) | ordered >> np.uint64(2)
    return keys
