"""A WAL directory the service cannot use: one line and the documented exit code, never
a traceback (the WAL is opened before Kafka is reached, so no broker is needed here)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from service_helpers import WALCORE, Service

from walcore.checkpoint import NAME as CHECKPOINT_NAME
from walcore.segment import segment_name


def file_instead_of_dir(wal: Path) -> None:
    wal.write_text("not a directory")


def under_a_file(wal: Path) -> None:
    wal.parent.joinpath("plain-file").write_text("x")


def segment_is_a_dir(wal: Path) -> None:
    (wal / segment_name(1)).mkdir(parents=True)


def checkpoint_is_a_dir(wal: Path) -> None:
    (wal / CHECKPOINT_NAME).mkdir(parents=True)


def wal_id_not_text(wal: Path) -> None:
    wal.mkdir()
    (wal / "WAL_ID").write_bytes(b"\xff\xfe\x00garbage")


CASES: list[tuple[str, Callable[[Path], None], str, int, str]] = [
    ("file", file_instead_of_dir, "wal", 2, "is unusable"),
    ("under a file", under_a_file, "plain-file/wal", 2, "is unusable"),
    ("segment is a directory", segment_is_a_dir, "wal", 2, "Is a directory"),
    ("CHECKPOINT is a directory", checkpoint_is_a_dir, "wal", 2, "Is a directory"),
    ("WAL_ID not text", wal_id_not_text, "wal", 3, "not a WAL id"),
]


@pytest.mark.parametrize("name,damage,where,code,says", CASES, ids=[c[0] for c in CASES])
def test_an_unusable_wal_directory_is_one_line_and_its_exit_code(tmp_path: Path, name: str,
                                                                  damage: Callable[[Path], None], where: str,
                                                                  code: int, says: str) -> None:
    damage(tmp_path / "wal")
    wal_dir = tmp_path / where
    service = Service("127.0.0.1:1", "signals", wal_dir, group="g", reply="r", dlq="d", log_dir=tmp_path)
    assert service.process.wait(timeout=60) == code, service.log()
    service.kill()
    log = service.log()
    assert says in log and "Traceback" not in log
    verify = subprocess.run([WALCORE, "verify", str(wal_dir)], capture_output=True, text=True, check=False)
    assert verify.returncode == (1 if code == 3 else 2) and "Traceback" not in verify.stderr, verify.stderr
