"""The ``top`` keyspace's keys: ranking by decayed score with forward decay. Pure.

A score kept as (value, ref) is worth value·e^(-λ(t - ref)) at any t ≥ ref (signals.py).
For value > 0 that is ordered, for every such t at once, by ln(value) + λ·ref (Cormode,
Shkapenyuk, Srivastava, Xu, "Forward decay", ICDE 2009): the common factor e^(-λt) drops
out of every comparison. So a key built from it never has to move as time passes, and
"the k highest scores at t" is the first k keys read backwards.

Negative weights make negative values; there the larger magnitude is the lower score, so
the rank is negated. Each key therefore starts with a *band*: 2 for value > 0, 1 for
value == 0, 0 for value < 0, then the rank as an order-preserving u64, then the entity:

    [signal type u16][band u8][rank: f64 mapped to u64, big-endian][entity u64]   (19 bytes)

Descending key order is descending score at every t ≥ every ref, within one signal type.
Ranks are floats: two scores closer than a few ulps of λ·ref may come out of the index in
the wrong order, so a reader takes ``RANK_MARGIN`` more keys past the k-th and sorts the
candidates by their exact values (walcore.storage.store).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from walcore.storage.keys import split_fixed

_KEY = struct.Struct(">HBQQ")
KEY_SIZE = _KEY.size
_PREFIX = struct.Struct(">H")
_SIGN = 1 << 63
NEGATIVE, ZERO, POSITIVE = 0, 1, 2
_KEY_ROW = np.dtype([("signal", ">u2"), ("band", "u1"), ("rank", ">u8"), ("entity", ">u8")])
assert _KEY_ROW.itemsize == KEY_SIZE


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
    """How far below a rank another key may sit and still be the higher score: the rounding
    of ln(value) + λ·ref is a few ulps of its larger term; 2^-40 relative is ~4,000 ulps."""
    return 1e-9 + abs(rank) * 2.0**-40


def _rank_bits(rank: float) -> int:
    """An f64 as a u64 whose unsigned order is the float's order."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", rank))
    return int(bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits & _SIGN else bits | _SIGN)


def _rank_of(bits: int) -> float:
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ 0xFFFF_FFFF_FFFF_FFFF
    (rank,) = struct.unpack(">d", struct.pack(">Q", bits))
    return float(rank)


def top_key(signal: int, value: float, ref_ns: int, entity_id: int, lam: float) -> bytes:
    """The key of one kept score: ``top_keys`` of one position, the same bytes."""
    return top_keys(
        np.array([signal]),
        np.array([value]),
        np.array([ref_ns], np.uint64),
        np.array([entity_id], np.uint64),
        np.array([lam]),
    )[0]


def bound_key(signal: int, band: int, rank: float) -> bytes:
    """The smallest key of ``signal`` at (band, rank): a scan's lower bound."""
    return _KEY.pack(signal, band, _rank_bits(rank), 0)


def decode_top_key(key: bytes) -> tuple[int, int, float, int]:
    """(signal type, band, rank, entity)."""
    signal, band, bits, entity = _KEY.unpack(key)
    return signal, band, _rank_of(bits), entity


def signal_prefix(signal: int) -> bytes:
    """Every ``top`` key of one signal type starts with this."""
    return _PREFIX.pack(signal)


def top_keys(
    signals: np.ndarray, values: np.ndarray, refs: np.ndarray, entities: np.ndarray, lams: np.ndarray
) -> list[bytes]:
    """``top_key(signal, *band_and_rank(value, ref, λ), entity)`` of each position of the
    columns, in one pass (the applier's batch)."""
    rows = np.empty(len(values), _KEY_ROW)
    rows["signal"], rows["entity"] = signals, entities
    positive, negative = values > 0, values < 0
    rows["band"] = np.where(positive, POSITIVE, np.where(negative, NEGATIVE, ZERO))
    # math.log, one value at a time: numpy's vector log may round differently by lane and
    # by machine, and the key deleted for a score must be the very bytes written for it.
    magnitudes = np.abs(values)
    magnitudes[magnitudes == 0] = 1.0  # zero band: rank 0 below
    logs = np.fromiter(map(math.log, magnitudes.tolist()), np.float64, len(magnitudes))
    magnitude = logs + lams * refs.astype(np.float64)
    rank = np.where(positive, magnitude, np.where(negative, -magnitude, 0.0))
    bits = rank.astype(">f8").view(">u8").astype(np.uint64)
    rows["rank"] = np.where(bits & np.uint64(_SIGN), ~bits, bits | np.uint64(_SIGN))
    return split_fixed(rows.tobytes(), KEY_SIZE)
