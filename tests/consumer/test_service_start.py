"""A WAL directory the service cannot use: one line and the documented exit code, never
a traceback (the WAL is opened before Kafka is reached, so no broker is needed here)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.service_helpers import WALCORE, Service
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
def test_an_unusable_wal_directory_is_one_line_and_its_exit_code(
    tmp_path: Path, name: str, damage: Callable[[Path], None], where: str, code: int, says: str
) -> None:
    damage(tmp_path / "wal")
    wal_dir = tmp_path / where
    service = Service("127.0.0.1:1", "signals", wal_dir, group="g", reply="r", dlq="d", log_dir=tmp_path)
    assert service.process.wait(timeout=60) == code, service.log()
    service.kill()
    log = service.log()
    assert says in log and "Traceback" not in log
    verify = subprocess.run([WALCORE, "verify", str(wal_dir)], capture_output=True, text=True, check=False)
    assert verify.returncode == (1 if code == 3 else 2) and "Traceback" not in verify.stderr, verify.stderr


@pytest.fixture
def small_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs of the test's own (root only: skipped where mounting is not allowed)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> None:
    with (directory / "filler").open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def test_a_fresh_wal_on_a_full_disk_exits_3_and_leaves_no_tmp_file(small_fs: Path, tmp_path: Path) -> None:
    fill(small_fs)
    (small_fs / "wal").mkdir()
    service = Service("127.0.0.1:1", "signals", small_fs / "wal", group="g", reply="r", dlq="d", log_dir=tmp_path)
    assert service.process.wait(timeout=60) == 3, service.log()
    service.kill()
    assert "disk is full or failing" in service.log() and "Traceback" not in service.log()
    assert list((small_fs / "wal").glob("*.tmp")) == []


def test_a_wal_on_a_read_only_file_system_exits_2(small_fs: Path, tmp_path: Path) -> None:
    (small_fs / "wal").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    service = Service("127.0.0.1:1", "signals", small_fs / "wal", group="g", reply="r", dlq="d", log_dir=tmp_path)
    assert service.process.wait(timeout=60) == 2, service.log()
    service.kill()
    assert "Read-only file system" in service.log() and "Traceback" not in service.log()


def test_a_wal_directory_the_services_user_cannot_write_exits_2(tmp_path: Path) -> None:
    import os
    import shutil

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the service without the capability to ignore permissions")
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir(mode=0o700)
    os.chown(wal_dir, 65534, 65534)  # another user's directory
    service = Service("127.0.0.1:1", "signals", wal_dir, group="g", reply="r", dlq="d", unprivileged=True)
    assert service.process.wait(timeout=60) == 2, service.log()
    service.kill()
    assert "Permission denied" in service.log() and "Traceback" not in service.log()


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_sigterm_while_the_service_is_still_starting_exits_0(tmp_path: Path, delay: float) -> None:
    """From config and imports through WAL recovery to the broker connect (which never
    succeeds here): SIGTERM at any of these moments is a clean stop."""
    service = Service("127.0.0.1:1", "signals", tmp_path / "wal", group="g", reply="r", dlq="d")
    time.sleep(delay)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=60) == 0, service.log()
    service.kill()


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (its /proc status SigCgt mask)."""
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_sigterm_from_the_moment_a_handler_is_in_exits_0_and_it_is_in_before_any_import_of_ours(tmp_path: Path) -> None:
    """The console script installs the handlers before argparse, logging or any module of
    the service is imported (consumer.launch); a SIGTERM sent the moment the process
    catches it is a clean stop."""
    probe = (
        "import sys, consumer.launch; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('consumer', 'walcore', 'argparse', 'logging', 'pydantic', 'kafka')))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "['consumer', 'consumer.launch']"
    service = Service("127.0.0.1:1", "signals", tmp_path / "wal", group="g", reply="r", dlq="d")
    started = time.monotonic()
    while not _catches(service.process.pid, signal.SIGTERM):
        assert service.process.poll() is None and time.monotonic() - started < 30, service.log()
        time.sleep(0.001)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=60) == 0, service.log()
    service.kill()
    assert "Traceback" not in service.log()


def test_log_format_json_is_one_object_per_line_with_structured_fields(tmp_path: Path) -> None:
    import json

    service = Service(
        "127.0.0.1:1", "signals", tmp_path / "wal", group="g", reply="r", dlq="d", extra=["--log-format", "json"]
    )
    service.wait_for_log("cannot reach Kafka")
    assert service.stop() == 0
    lines = [json.loads(line) for line in service.log().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(entry) for entry in lines)
    assert any(entry["logger"] == "walcore.wal" and "opened WAL" in entry["message"] for entry in lines)
