"""The few file-system moves the WAL makes, each followed by the fsync it needs.

A new or renamed or deleted directory entry is durable only once the directory
itself is fsynced; a file's data only once the file is. Every helper here does both
halves so callers cannot forget one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from walcore.errors import WalLocked

LOCK_NAME = "LOCK"
# The event stream is nobody else's business (etcd's WAL does the same): files the WAL
# creates are owner-only, and so is a directory it creates, whatever the umask (a umask
# can only take bits away).
FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write may write less than asked (e.g. on a nearly full disk); loop."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(directory: Path, name: str, data: bytes) -> None:
    """Replace ``directory/name`` with ``data`` all-or-nothing: tmp file, fsync, rename,
    fsync dir. A crash leaves either the old file or the new one, plus at most a stray
    ``.tmp`` that readers ignore."""
    tmp = directory / f"{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # e.g. a full disk: leave no empty .tmp behind
        raise
    os.replace(tmp, directory / name)
    fsync_dir(directory)


def remove_durably(path: Path) -> None:
    path.unlink()
    fsync_dir(path.parent)


class DirLock:
    """An exclusive flock on ``DIR/LOCK``: two processes never append to one WAL.
    The kernel drops the lock when the process dies, so a crash leaves no stale lock."""

    def __init__(self, directory: Path) -> None:
        self._fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise WalLocked(
                f"{directory} is in use by another process (lock {directory / LOCK_NAME}); "
                "each instance needs its own WAL directory"
            ) from None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
