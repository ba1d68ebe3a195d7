"""Store keys: ``[entity id, 8 bytes big-endian][0x00][tag][suffix]`` (the seed's layout).

Big-endian fixed-width integers make byte order equal numeric order, so one entity's
keys are contiguous, a tag's keys are contiguous within it, and an event scan comes out
in (signal type, timestamp, seq) order. Pure functions; docs/store-format.md has the table.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

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
