"""Which partition Kafka's default partitioner gives a keyed message: murmur2 of the key,
as the Java client computes it (org.apache.kafka.common.utils.Utils.murmur2), its sign bit
cleared, modulo the partition count. kafka-python's default partitioner and librdkafka's
"murmur2_random" agree with it; the handoff reads the reply partition an ack key maps to
from here, so the confluent backend needs no kafka-python. Pure."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_SHIFT = {bits: np.uint32(bits) for bits in (8, 13, 15, 16, 24)}  # uint32 shifts stay uint32


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash of ``data`` (unsigned; Java's int is the same bits)."""
    return int(_murmur2_columns([np.array([byte], np.uint32) for byte in data])[0])


def partition_of(key: bytes, partitions: int) -> int:
    """The partition (0 .. partitions-1) of a message keyed ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _murmur2_columns(key: list[npt.NDArray[np.uint32]]) -> npt.NDArray[np.uint32]:
    """murmur2 of several keys of one length at once: ``key[i]`` holds every key's i-th
    byte. uint32 arithmetic wraps as Java's int does."""
    length = len(key)
    m = np.uint32(_M)
    h = np.full(len(key[0]) if key else 1, (_SEED ^ length) & _MASK, np.uint32)
    whole = length - length % 4
    for at in range(0, whole, 4):
        k = key[at] | (key[at + 1] << _SHIFT[8]) | (key[at + 2] << _SHIFT[16]) | (key[at + 3] << _SHIFT[24])
        k = k * m
        k ^= k >> _SHIFT[24]
        k = k * m
        h = (h * m) ^ k
    tail = length % 4
    if tail == 3:
        h ^= key[whole + 2] << _SHIFT[16]
    if tail >= 2:
        h ^= key[whole + 1] << _SHIFT[8]
    if tail >= 1:
        h ^= key[whole]
        h = h * m
    h ^= h >> _SHIFT[13]
    h = h * m
    h ^= h >> _SHIFT[15]
    return h


_POWERS = np.array([10**i for i in range(20)], np.uint64)


def entity_key_hashes(entities: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """``murmur2(str(entity).encode()) & 0x7FFFFFFF`` of each entity id, in numpy columns:
    the default partitioner's hash of the key DurableProducer gives an event (its entity id
    in decimal), so that an entity's partition is this modulo the partition count. The
    store's applier hashes every event it applies (consumer.protocol.placement)."""
    entities = np.asarray(entities, np.uint64)
    lengths = 1 + (entities[:, None] >= _POWERS[None, 1:]).sum(axis=1)
    found = np.empty(len(entities), np.int64)
    for length in np.unique(lengths).tolist():
        chosen = lengths == length
        ids = entities[chosen]
        # The key's bytes (ASCII digits, most significant first), a column each.
        digits = [
            ((ids // _POWERS[length - 1 - at]) % np.uint64(10) + np.uint64(48)).astype(np.uint32)
            for at in range(length)
        ]
        found[chosen] = _murmur2_columns(digits) & np.uint32(0x7FFFFFFF)
    return found
