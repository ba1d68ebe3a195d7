"""Random damage to copies of one WAL (bounded in `make test`; TIDAL_SOAK=1 runs more):
bit flips, truncations, zeroed ranges, appended garbage, deleted or renamed segments, a
damaged checkpoint or id. Whatever the damage: never an unexpected exception, never a
different or reordered record, and never fewer records unless the damage was at the end
of the last segment holding bytes (a torn tail, cut on open)."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.support.walcore_helpers import segments
from walcore import EventRecord, SourcePosition, Wal, WalConfig, WalCorruption
from walcore.cli import main as walcore_cli
from walcore.segment import segment_name

pytestmark = pytest.mark.soak

ROUNDS = 3000 if os.environ.get("TIDAL_SOAK") == "1" else 300
CONFIG = WalConfig(segment_size=2500)


def build(directory: Path) -> list[tuple[int, EventRecord]]:
    rng = random.Random(1)
    offset = 0
    with Wal.open(directory, CONFIG) as wal:
        for batch in range(12):
            size = rng.randint(1, 30)
            records = [
                EventRecord(
                    rng.getrandbits(64),
                    rng.randrange(6),
                    rng.random(),
                    rng.getrandbits(60),
                    f"id-{batch}-{i}" if rng.random() < 0.3 else None,
                    SourcePosition("t", batch % 3, offset + i),
                )
                for i in range(size)
            ]
            offset += size + 1
            wal.append_batch(records)
        wal.checkpoint(5)
        wal.void([3, 7], "fuzz")
        return list(wal.replay(include_voided=True))


def damage(directory: Path, rng: random.Random) -> tuple[str, Path | None]:
    files = sorted(p for p in directory.iterdir() if p.name != "LOCK")
    target = rng.choice(files)
    data = bytearray(target.read_bytes())
    kind = rng.choice(["flip", "truncate", "zero", "garbage", "delete", "rename"])
    if kind == "flip" and data:
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data) + 1) :]
    elif kind == "zero" and data:
        start = rng.randrange(len(data))
        data[start : start + rng.randint(1, 512)] = bytes(min(len(data) - start, rng.randint(1, 512)))
    elif kind == "garbage":
        data += rng.randbytes(rng.randint(1, 200))
    elif kind == "delete":
        target.unlink()
        return kind, target
    elif kind == "rename" and target.suffix == ".wal":
        target.rename(directory / segment_name(rng.randint(1, 400)))
        return kind, target
    target.write_bytes(bytes(data))
    return kind, target


def last_segment_with_bytes(directory: Path) -> Path | None:
    nonempty = [p for p in segments(directory) if p.stat().st_size]
    return nonempty[-1] if nonempty else None


def test_random_damage_never_yields_a_wrong_record(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    base = build(base_dir)
    rng = random.Random(2026)
    outcomes = {"opened whole": 0, "tail cut": 0, "refused": 0}
    for round_no in range(ROUNDS):
        copy = tmp_path / f"copy-{round_no}"
        shutil.copytree(base_dir, copy)
        last_before = last_segment_with_bytes(copy)
        kind, target = damage(copy, rng)
        what = f"round {round_no}: {kind} {target.name if target else ''}"
        assert walcore_cli(["verify", str(copy)]) in (0, 1, 2), what  # no exception escapes
        try:
            with Wal.open(copy, CONFIG) as wal:
                replayed = list(wal.replay(include_voided=True))
        except WalCorruption:
            outcomes["refused"] += 1
        else:
            assert replayed == base[: len(replayed)], what  # never a different or reordered record
            if len(replayed) < len(base):
                assert target == last_before and kind in ("flip", "truncate", "zero", "garbage"), what
                outcomes["tail cut"] += 1
            else:
                outcomes["opened whole"] += 1
        shutil.rmtree(copy)
    print(f"\n{ROUNDS} damaged copies: {outcomes}")
    assert outcomes["refused"] and outcomes["tail cut"]
