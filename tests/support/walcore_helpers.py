"""Shared builders for the walcore tests."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import blake3
import pytest

from walcore import EventRecord, SourcePosition, Wal, WalConfig
from walcore.format import MAGIC, encode_body
from walcore.schema import Schema
from walcore.segment import list_segments
from walcore.storage.signals import NANOS, lambda_per_ns


def records(n: int, start: int = 0, *, topic: str | None = "signals", partition: int = 0) -> list[EventRecord]:
    return [
        EventRecord(
            entity_id=1000 + i,
            signal_type=i % 5,
            weight=0.5 + i,
            timestamp_nanos=1_700_000_000_000_000_000 + i,
            source=None if topic is None else SourcePosition(topic, partition, i),
        )
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


def version_1_frame(batch: list[EventRecord], base_seq: int, batch_ts: int) -> bytes:
    """A frame as walcore wrote it before the row layout, built from the spec in
    docs/wal-format.md (fixed fields column by column), not by the codec under test."""
    n = len(batch)
    columns = struct.pack(
        f"<{n}Q{n}Q{n}d{n}H",
        *(r.entity_id for r in batch),
        *(r.timestamp_nanos for r in batch),
        *(r.weight for r in batch),
        *(r.signal_type for r in batch),
    )
    sections = encode_body(batch)
    body = columns + sections.data[26 * n :]  # the event-id and source sections did not change
    head = struct.pack(
        "<IBBHIIQQIII", MAGIC, 1, 1, 0, len(body), n, base_seq, batch_ts, sections.ids_len, sections.src_len, 0
    )
    head += struct.pack("<I", zlib.crc32(head))
    return head + body + blake3.blake3(head + body).digest()


def naive_signals(
    events: Iterable[EventRecord], entity: int, at: int, schema: Schema
) -> dict[str, tuple[float, dict[int, int], tuple[float, int] | None]]:
    """From the definition: per signal type of ``entity`` with events at or before ``at``
    (any, with none at or before ``at``: score 0, windows 0), its decayed score, window
    counts and velocity."""
    mine = [r for r in events if r.entity_id == entity]
    found = {}
    for definition in schema.by_name.values():
        typed = [r for r in mine if r.signal_type == definition.id]
        if not typed:
            continue
        lam = lambda_per_ns(definition.half_life_seconds)
        seen = [r for r in typed if r.timestamp_nanos <= at]
        score = math.fsum(r.weight * math.exp(-lam * (at - r.timestamp_nanos)) for r in seen)
        windows = {w: sum(1 for r in seen if r.timestamp_nanos > at - w * NANOS) for w in definition.windows_seconds}
        velocity = None
        if definition.velocity:
            w0 = definition.windows_seconds[0] * NANOS
            recent = sum(1 for r in seen if r.timestamp_nanos > at - w0)
            before = sum(1 for r in seen if at - 2 * w0 < r.timestamp_nanos <= at - w0)
            velocity = (recent * 3600 / definition.windows_seconds[0], recent - before)
        found[definition.name] = (score, windows, velocity)
    return found


def naive_ranking(events: Iterable[EventRecord], signal_type: int, lam: float, at: int) -> list[tuple[int, float]]:
    """From the definition: every entity with an event of the type at or before ``at``, by
    Σ w·e^(-λ(at - ts)), highest first (ties: lower entity id first)."""
    terms: dict[int, list[float]] = {}
    for record in events:
        if record.signal_type == signal_type and record.timestamp_nanos <= at:
            terms.setdefault(record.entity_id, []).append(
                record.weight * math.exp(-lam * (at - record.timestamp_nanos))
            )
    return sorted(((entity, math.fsum(found)) for entity, found in terms.items()), key=lambda e: (-e[1], e[0]))


def assert_same_ranking(
    got: list[tuple[int, float]], expected: list[tuple[int, float]], k: int, tolerance: float = 1e-9
) -> None:
    """``got`` is the top ``k`` of ``expected`` (a whole naive ranking): the same scores
    position by position, each entity with its own score, and the same entities except
    where scores tie within the rounding ``tolerance`` at the k-th place."""
    want = expected[:k]
    assert len(got) == len(want), (got, want)
    everyone = dict(expected)
    for (entity, score), (_, wanted) in zip(got, want):
        assert score == pytest.approx(wanted, rel=tolerance, abs=tolerance), (got, want)
        assert entity in everyone and score == pytest.approx(everyone[entity], rel=tolerance, abs=tolerance)
    if want:
        boundary = want[-1][1]
        close = abs(boundary) * tolerance + tolerance
        assert {e for e, s in got if abs(s - boundary) > close} == {e for e, s in want if abs(s - boundary) > close}
