"""Where each batch frame of the log is, to read stored records back by seq.

One entry per frame (per group commit: about 100 bytes each), rebuilt on open from the
scan. The writer reads frames back only to check a Kafka redelivery against what it
stored at that position (walcore.writer), which happens after a crash or a rebalance,
a few frames at a time: each frame read is verified again (BLAKE3) before it is trusted.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterable
from pathlib import Path

from walcore.errors import WalCorruption
from walcore.format import HEADER_LEN, FrameHeader, decode_header, digest_ok, identities


class FrameIndex:
    def __init__(self) -> None:
        self._base_seqs: list[int] = []
        self._places: list[tuple[Path, int]] = []

    def add(self, base_seq: int, path: Path, offset: int) -> None:
        """A frame written after every frame already indexed."""
        self._base_seqs.append(base_seq)
        self._places.append((path, offset))

    def drop_below(self, seq: int) -> None:
        """Forget frames starting below ``seq`` (their segments were deleted)."""
        keep = bisect_right(self._base_seqs, seq - 1)
        del self._base_seqs[:keep]
        del self._places[:keep]

    def identities(self, seqs: Iterable[int]) -> dict[int, tuple[bytes, str | None]]:
        """(row, event_id) of each stored seq, reading each frame holding some once. Seqs
        of frames no longer indexed (truncated) are left out."""
        wanted: dict[int, list[int]] = {}
        for seq in seqs:
            index = bisect_right(self._base_seqs, seq) - 1
            if index >= 0:
                wanted.setdefault(index, []).append(seq)
        found: dict[int, tuple[bytes, str | None]] = {}
        for index, frame_seqs in wanted.items():
            path, offset = self._places[index]
            data, header = _read_frame(path, offset)
            stored = identities(data, 0, header)
            for seq in frame_seqs:
                if seq - header.base_seq < header.count:
                    found[seq] = stored[seq - header.base_seq]
        return found


def _read_frame(path: Path, offset: int) -> tuple[bytes, FrameHeader]:
    fd = os.open(path, os.O_RDONLY)
    try:
        header = decode_header(os.pread(fd, HEADER_LEN, offset), 0)
        if not isinstance(header, FrameHeader):
            raise WalCorruption(path, offset, f"reading a stored frame back: {header.reason}")
        data = os.pread(fd, header.frame_len, offset)
    finally:
        os.close(fd)
    if not digest_ok(data, 0, header):
        raise WalCorruption(path, offset, "reading a stored frame back: BLAKE3 digest mismatch")
    return data, header
