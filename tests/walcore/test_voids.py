"""Void entries and new sources (ARCHITECTURE invariant 7, the WAL's part): a voided event
is never live again, across reopen; a Kafka position holding a different message than the
one stored is a new source, never a redelivery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.walcore_helpers import records, segments
from walcore import EventRecord, SourcePosition, Wal, WalConfig
from walcore.format import FRAME_VOID, HEADER_LEN, decode_header

WALCORE = [sys.executable, "-m", "walcore.cli"]


def test_a_voided_event_is_not_live_and_never_an_original_again_even_after_reopen(tmp_path: Path) -> None:
    batch = records(5)  # offsets 0..4 -> seqs 1..5
    with Wal.open(tmp_path) as wal:
        wal.append_batch(batch)
        assert wal.void([2, 4], "acked first by wal B") == [2, 4]
        assert wal.void([2], "again") == []  # already voided: nothing appended
        assert [seq for seq, _ in wal.replay()] == [1, 3, 5]
        assert [seq for seq, _ in wal.replay(include_voided=True)] == [1, 2, 3, 4, 5]
        # a producer retry of a voided event's content is not a duplicate of the voided seq
        assert wal.append_batch([batch[3]._replace(source=None)])[0] == (6, False, False)
    with Wal.open(tmp_path) as wal:
        assert wal.voided == {2, 4}
        assert wal.stored_at("signals", 0, [0, 1, 2, 3, 4]) == {0: 1, 2: 3, 4: 5}
        # the voided offset redelivered is not answered with the voided seq, nor is its content
        again = wal.append_batch([batch[1], batch[1]._replace(source=None)])
        assert [r.seq for r in again] == [7, 7] and again[0].duplicate is False
        assert wal.last_seq == 7


def test_void_frames_take_no_seq_and_change_no_frame(tmp_path: Path) -> None:
    with Wal.open(tmp_path, WalConfig(segment_size=1)) as wal:  # one batch per segment
        wal.append_batch(records(3))
        before = segments(tmp_path)[0].read_bytes()
        wal.void([1], "test")
        wal.append_batch(records(2, 3))
        assert wal.last_seq == 5  # gap-free: the void took no seq
    first = segments(tmp_path)[0].read_bytes()
    assert first.startswith(before)  # the stored frame is untouched; the void was appended
    header = decode_header(first, len(before))
    assert header.kind == FRAME_VOID and header.count == 1 and header.base_seq == 4
    assert [p.name[:20].lstrip("0") for p in segments(tmp_path)] == ["1", "4"]


def test_voiding_seqs_not_stored_is_refused(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(2))
        with pytest.raises(ValueError, match=r"only stored seqs 1\.\.2"):
            wal.void([3], "future")


def test_dump_marks_and_stats_count_voided_events(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(3))
        wal.void([2], "acked first elsewhere")
    dumped = subprocess.run([*WALCORE, "dump", str(tmp_path), "--json"], capture_output=True, text=True, check=True)
    assert [json.loads(line)["voided"] for line in dumped.stdout.splitlines()] == [False, True, False]
    stats = subprocess.run([*WALCORE, "stats", str(tmp_path), "--json"], capture_output=True, text=True, check=True)
    assert json.loads(stats.stdout)["voided"] == 1
    verify = subprocess.run([*WALCORE, "verify", str(tmp_path)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0


def test_a_torn_void_frame_is_cut_like_any_torn_tail(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(3))
        wal.void([1], "x")
    path = segments(tmp_path)[0]
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the void frame's digest torn
    with Wal.open(tmp_path) as wal:
        assert wal.voided == set() and wal.last_seq == 3
    assert len(path.read_bytes()) < len(data) - HEADER_LEN


def same_offsets_other_messages(count: int) -> list[EventRecord]:
    return [EventRecord(9000 + i, 2, 9.5, 7 + i, None, SourcePosition("signals", 0, i)) for i in range(count)]


@pytest.mark.parametrize("reopen", [False, True])
def test_a_recreated_topic_is_a_new_source_not_redeliveries(tmp_path: Path, reopen: bool) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(300))  # offsets 0..299 -> seqs 1..300
        if not reopen:
            fresh = wal.append_batch(same_offsets_other_messages(100))
            assert wal.source_offsets() == {("signals", 0): 99}  # the old topic's positions are gone
    if reopen:
        with Wal.open(tmp_path) as wal:
            fresh = wal.append_batch(same_offsets_other_messages(100))
    assert [r.seq for r in fresh] == list(range(301, 401))
    assert not any(r.duplicate for r in fresh)
    with Wal.open(tmp_path) as wal:  # rebuilt from the log: the new incarnation's positions only
        assert wal.source_offsets() == {("signals", 0): 99}
        again = wal.append_batch(same_offsets_other_messages(100)[:5])
        old_again = wal.append_batch(records(5))  # the old topic's messages: not at those positions any more
    assert [(r.seq, r.redelivery) for r in again] == [(301 + i, True) for i in range(5)]
    assert not any(r.redelivery for r in old_again)


def test_a_true_redelivery_after_a_reopen_is_still_recognised_by_content(tmp_path: Path) -> None:
    batch = records(50, topic="orders", partition=3)
    with Wal.open(tmp_path) as wal:
        wal.append_batch(batch)
    with Wal.open(tmp_path) as wal:
        again = wal.append_batch(batch[20:30])
    assert [(r.seq, r.duplicate, r.redelivery) for r in again] == [(s, True, True) for s in range(21, 31)]
