"""Segment files: named by their first sequence number, appended to, rotated by size."""

from __future__ import annotations

import os
import re
from pathlib import Path

from walcore.files import FILE_MODE, fsync_dir, write_all

SUFFIX = ".wal"
_NAME = re.compile(r"^(\d{20})\.wal$")


def segment_name(first_seq: int) -> str:
    # Zero-padded so that lexical order is seq order in `ls` too.
    return f"{first_seq:020d}{SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first_seq, path) of every segment, in seq order."""
    found = []
    for entry in os.scandir(directory):
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), Path(entry.path)))
    return sorted(found)


class ActiveSegment:
    """The one segment being appended to. Only the writer thread touches it."""

    def __init__(self, path: Path, first_seq: int, size: int) -> None:
        self.path = path
        self.first_seq = first_seq
        self.size = size
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    @classmethod
    def create(cls, directory: Path, first_seq: int) -> ActiveSegment:
        path = directory / segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(fd)
        fsync_dir(directory)  # the new name must survive a crash before data lands in it
        return cls(path, first_seq, 0)

    def append(self, frame: bytes) -> None:
        write_all(self._fd, frame)
        self.size += len(frame)

    def sync(self) -> None:
        # fdatasync: the data and the size; other metadata (mtime) need not be durable.
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
