"""Shared builders for the walcore tests."""

from __future__ import annotations

from pathlib import Path

from walcore import EventRecord, SourcePosition, Wal, WalConfig
from walcore.segment import list_segments


def records(n: int, start: int = 0, *, topic: str | None = "signals", partition: int = 0) -> list[EventRecord]:
    return [
        EventRecord(entity_id=1000 + i, signal_type=i % 5, weight=0.5 + i,
                    timestamp_nanos=1_700_000_000_000_000_000 + i,
                    source=None if topic is None else SourcePosition(topic, partition, i))
        for i in range(start, start + n)
    ]


def write_log(directory: Path, batches: list[int], config: WalConfig | None = None) -> list[int]:
    """Append batches of the given sizes (consecutive offsets); returns the seqs."""
    seqs: list[int] = []
    offset = 0
    with Wal.open(directory, config) as wal:
        for size in batches:
            seqs += [r.seq for r in wal.append_batch(records(size, offset))]
            offset += size
    return seqs


def segments(directory: Path) -> list[Path]:
    return [path for _, path in list_segments(directory)]


def replayed(directory: Path) -> list[tuple[int, EventRecord]]:
    with Wal.open(directory) as wal:
        return list(wal.replay())
