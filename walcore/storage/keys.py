"""Store keys: ``[entity id, 8 bytes big-endian][0x00][tag][suffix]`` (the seed's layout).

Big-endian fixed-width integers make byte order equal numeric order, so one entity's
keys are contiguous, a tag's keys are contiguous within it, and an event scan comes out
in (signal type, timestamp, seq) order. Pure functions; docs/store-format.md has the table.
``event_keys`` and ``score_keys`` encode a whole batch's columns at once (numpy), the
same bytes as ``event_key`` and ``score_key``.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

import numpy as np

SEPARATOR = 0x00


class Tag(IntEnum):
    EVENT = 1  # suffix: signal type (u16), timestamp ns (u64), seq (u64)
    SCORE = 2  # suffix: signal type (u16)


_ENTITY = struct.Struct(">QBB")
_EVENT = struct.Struct(">QBBHQQ")
_SCORE = struct.Struct(">QBBH")
_TYPE_PREFIX = struct.Struct(">QBBH")
# The tags as plain ints: struct packs an IntEnum member at half the speed, and the
# applier packs two keys an event.
_EVENT_TAG, _SCORE_TAG = int(Tag.EVENT), int(Tag.SCORE)
# The same layouts as numpy records, for a batch's keys in one pass.
_EVENT_ROW = np.dtype(
    [("entity", ">u8"), ("separator", "u1"), ("tag", "u1"), ("signal", ">u2"), ("timestamp", ">u8"), ("seq", ">u8")]
)
_SCORE_ROW = np.dtype([("entity", ">u8"), ("separator", "u1"), ("tag", "u1"), ("signal", ">u2")])
assert _EVENT_ROW.itemsize == _EVENT.size and _SCORE_ROW.itemsize == _SCORE.size


class EventKey(NamedTuple):
    entity_id: int
    signal_type: int
    timestamp_nanos: int
    seq: int


def event_key(entity_id: int, signal_type: int, timestamp_nanos: int, seq: int) -> bytes:
    return _EVENT.pack(entity_id, SEPARATOR, _EVENT_TAG, signal_type, timestamp_nanos, seq)


def decode_event_key(key: bytes) -> EventKey:
    entity_id, separator, tag, signal_type, timestamp_nanos, seq = _EVENT.unpack(key)
    if separator != SEPARATOR or tag != Tag.EVENT:
        raise ValueError(f"not an event key: {key.hex()}")
    return EventKey(entity_id, signal_type, timestamp_nanos, seq)


def score_key(entity_id: int, signal_type: int) -> bytes:
    return _SCORE.pack(entity_id, SEPARATOR, _SCORE_TAG, signal_type)


def decode_score_key(key: bytes) -> tuple[int, int]:
    entity_id, separator, tag, signal_type = _SCORE.unpack(key)
    if separator != SEPARATOR or tag != Tag.SCORE:
        raise ValueError(f"not a score key: {key.hex()}")
    return entity_id, signal_type


def split_fixed(buffer: bytes, width: int) -> list[bytes]:
    """``buffer`` cut into consecutive ``width``-byte strings."""
    return [buffer[start : start + width] for start in range(0, len(buffer), width)]


def event_keys(entities: np.ndarray, signals: np.ndarray, timestamps: np.ndarray, seqs: np.ndarray) -> list[bytes]:
    """``event_key`` of each position of the four columns."""
    rows = np.empty(len(entities), _EVENT_ROW)
    rows["entity"], rows["separator"], rows["tag"] = entities, SEPARATOR, _EVENT_TAG
    rows["signal"], rows["timestamp"], rows["seq"] = signals, timestamps, seqs
    return split_fixed(rows.tobytes(), _EVENT_ROW.itemsize)


def score_keys(entities: np.ndarray, signals: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """The distinct score keys of the columns (``score_key``), in key order, and for each position
    the index of its key among them."""
    rows = np.empty(len(entities), _SCORE_ROW)
    rows["entity"], rows["separator"], rows["tag"], rows["signal"] = entities, SEPARATOR, _SCORE_TAG, signals
    # As fixed-width byte strings numpy orders them as bytes, which is key order.
    distinct, positions = np.unique(rows.view(f"S{_SCORE_ROW.itemsize}"), return_inverse=True)
    return split_fixed(distinct.tobytes(), _SCORE_ROW.itemsize), positions


def tag_prefix(entity_id: int, tag: Tag) -> bytes:
    """Every key of one entity and tag starts with this."""
    return _ENTITY.pack(entity_id, SEPARATOR, tag)


def events_prefix(entity_id: int, signal_type: int) -> bytes:
    """Every event key of one entity and signal type starts with this."""
    return _TYPE_PREFIX.pack(entity_id, SEPARATOR, Tag.EVENT, signal_type)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
