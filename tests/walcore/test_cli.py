"""`walcore verify|dump|stats`, run as the installed console script (a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.walcore_helpers import records, segments, version_1_frame, write_log
from walcore import Wal, WalConfig
from walcore.segment import segment_name

WALCORE = shutil.which("walcore", path=str(Path(sys.executable).parent)) or "walcore"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WALCORE, *args], capture_output=True, text=True, check=False)


def test_verify_clean_log_exits_0(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 5])
    result = run("verify", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "15 event(s)" in result.stdout


def test_verify_bit_flip_exits_1_naming_file_and_offset(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10], WalConfig(segment_size=1))
    sealed = segments(tmp_path)[0]
    data = bytearray(sealed.read_bytes())
    data[100] ^= 4
    sealed.write_bytes(bytes(data))
    result = run("verify", str(tmp_path))
    assert result.returncode == 1
    assert str(sealed) in result.stderr and "at byte 0" in result.stderr


def test_verify_torn_tail_exits_1_and_changes_nothing(tmp_path: Path) -> None:
    write_log(tmp_path, [10])
    seg = segments(tmp_path)[0]
    with seg.open("ab") as handle:
        handle.write(bytes(64))
    size = seg.stat().st_size
    result = run("verify", str(tmp_path))
    assert result.returncode == 1 and "torn tail" in result.stderr
    assert seg.stat().st_size == size


def test_verify_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("verify", str(tmp_path / "nope")).returncode == 2
    assert run("frobnicate").returncode == 2


def test_dump_json_prints_every_event_with_its_source(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(3))
        wal.append(records(1, 3, topic=None)[0]._replace(event_id="e-1")).result()
    result = run("dump", str(tmp_path), "--json", "--from-seq", "3")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [3, 4]
    assert rows[0]["source"] == {"topic": "signals", "partition": 0, "offset": 2}
    assert rows[1]["event_id"] == "e-1" and rows[1]["source"] is None
    assert set(rows[0]) == {
        "seq",
        "entity_id",
        "signal_type",
        "weight",
        "timestamp_nanos",
        "event_id",
        "source",
        "voided",
    }


def test_stats_reports_seqs_and_partitions(tmp_path: Path) -> None:
    write_log(tmp_path, [4, 4])
    result = run("stats", str(tmp_path), "--json")
    stats = json.loads(result.stdout)
    assert (stats["events"], stats["first_seq"], stats["last_seq"]) == (8, 1, 8)
    assert stats["partitions"] == {"signals:0": 7}
    assert stats["format_versions"] == {"2": 2}


def test_stats_counts_frames_of_each_format_version(tmp_path: Path) -> None:
    (tmp_path / segment_name(1)).write_bytes(version_1_frame(records(3), 1, 1))  # written before the upgrade
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(2, 3))
    assert json.loads(run("stats", str(tmp_path), "--json").stdout)["format_versions"] == {"1": 1, "2": 1}


def test_dump_into_a_reader_that_stops_early_exits_0_quietly(tmp_path: Path) -> None:
    write_log(tmp_path, [2000] * 5)  # far more than a pipe buffer holds
    for extra in ([], ["--json"]):
        dump = subprocess.Popen(
            [WALCORE, "dump", str(tmp_path), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert dump.stdout is not None and dump.stdout.readline()
        dump.stdout.close()  # as `| head -1` does
        assert dump.wait(timeout=60) == 0
        assert dump.stderr is not None and dump.stderr.read() == b""
