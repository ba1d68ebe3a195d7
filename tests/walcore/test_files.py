"""The files the WAL creates: owner-only whatever the umask, and no litter on failure."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import walcore.files
from tests.support.walcore_helpers import records
from walcore import Wal
from walcore.files import atomic_write


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_wal_files_are_owner_only_even_under_a_permissive_umask(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "wal"
    previous = os.umask(0)
    try:
        with Wal.open(directory) as wal:
            wal.append_batch(records(10))
            wal.checkpoint(5)
    finally:
        os.umask(previous)
    assert mode(directory) == 0o700
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["00000000000000000001.wal", "CHECKPOINT", "LOCK", "WAL_ID"]
    assert {p.name: mode(p) for p in directory.iterdir()} == dict.fromkeys(files, 0o600)


def test_a_write_failing_on_a_full_disk_leaves_no_tmp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int, _data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(walcore.files, "write_all", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path, "WAL_ID", b"0123456789abcdef")
    assert list(tmp_path.iterdir()) == []
