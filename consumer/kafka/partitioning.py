"""Which partition Kafka's default partitioner gives a keyed message: murmur2 of the key,
as the Java client computes it (org.apache.kafka.common.utils.Utils.murmur2), its sign bit
cleared, modulo the partition count. kafka-python's default partitioner and librdkafka's
"murmur2_random" agree with it; the handoff reads the reply partition an ack key maps to
from here, so the confluent backend needs no kafka-python. Pure."""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash of ``data`` (unsigned; Java's int is the same bits)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for at in range(0, whole, 4):
        k = int.from_bytes(data[at : at + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition (0 .. partitions-1) of a message keyed ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
