"""The checkpoint: the highest seq a downstream stage has made durable elsewhere.

File ``CHECKPOINT`` (20 bytes, little-endian): magic b"TCKP", u32 version (1),
u64 seq, u32 CRC-32 of the first 16 bytes. Written atomically (walcore.files).
Segments entirely at or below it may be deleted by ``truncate_before``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from walcore.errors import WalCorruption
from walcore.files import atomic_write

NAME = "CHECKPOINT"
MAX_SEQ = 2**63 - 1  # far beyond any real log; the next seq must still fit a frame's u64
_LAYOUT = struct.Struct("<4sIQI")
_MAGIC = b"TCKP"


def encode_checkpoint(seq: int) -> bytes:
    head = _LAYOUT.pack(_MAGIC, 1, seq, 0)[:16]
    return head + struct.pack("<I", zlib.crc32(head))


def decode_checkpoint(data: bytes, path: Path) -> int:
    if len(data) != _LAYOUT.size:
        raise WalCorruption(
            path, min(len(data), _LAYOUT.size), f"checkpoint is {len(data)} bytes, expected {_LAYOUT.size}"
        )
    magic, version, seq, crc = _LAYOUT.unpack(data)
    if magic != _MAGIC or version != 1 or zlib.crc32(data[:16]) != crc:
        raise WalCorruption(path, 0, "checkpoint magic/version/checksum mismatch")
    if seq > MAX_SEQ:
        raise WalCorruption(path, 8, f"checkpoint seq {seq} is beyond any seq a WAL reaches ({MAX_SEQ})")
    return int(seq)


def read_checkpoint(directory: Path) -> int:
    """The checkpointed seq, 0 when there is none. A stray CHECKPOINT.tmp (a crash while
    writing it) is ignored: the rename never happened, so the old checkpoint stands."""
    path = directory / NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    return decode_checkpoint(data, path)


def write_checkpoint(directory: Path, seq: int) -> None:
    atomic_write(directory, NAME, encode_checkpoint(seq))
