"""The boundaries a one-character bug would move: each test here fails if a `<=` turns
into `<`, a window rotates early, truncation deletes one segment too many, or the source
index forgets what is still on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

import walcore.writer
from tests.support.walcore_helpers import records, segments, write_log
from walcore import EventRecord, SourcePosition, Wal, WalConfig, WalFailed

WINDOW_S = 10.0
WINDOW_NS = int(WINDOW_S * 1e9)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


@pytest.mark.parametrize("how", ["append_batch", "append"])
def test_the_last_stored_offset_redelivered_after_the_window_is_recognised(tmp_path: Path, how: str) -> None:
    clock = FakeClock()
    batch = records(10, topic="orders", partition=1)  # offsets 0..9, seqs 1..10
    with Wal.open(tmp_path, WalConfig(dedup_window=1.0), clock=clock) as wal:
        wal.append_batch(batch)
        clock.now += 3 * 10**9  # the dedup window has forgotten it: only the source index knows
        last = batch[-1]
        result = wal.append_batch([last])[0] if how == "append_batch" else wal.append(last).result()
        assert result == (10, True, True)  # the original seq, as a redelivery
        assert wal.last_seq == 10  # not stored again


@pytest.mark.parametrize("how", ["append", "append_batch"])  # append_batch: the service's bulk path
@pytest.mark.parametrize("phase", [0.0, 0.25, 0.49, 0.51, 0.9, 0.999])
def test_a_retry_within_the_window_is_a_duplicate_wherever_the_first_copy_fell(
    tmp_path: Path, phase: float, how: str
) -> None:
    """The promise: a stored key stays a duplicate for at least the window. A window
    rotating at half its length would forget keys stored just before a rotation."""
    clock = FakeClock()

    def store(record: EventRecord) -> tuple[int, bool, bool]:
        return wal.append_batch([record])[0] if how == "append_batch" else wal.append(record).result()

    with Wal.open(tmp_path, WalConfig(dedup_window=WINDOW_S), clock=clock) as wal:
        clock.now += int(phase * WINDOW_NS)
        first = store(EventRecord(1, 1, 1.0, 1, event_id="order-1"))
        for step in range(1, 20):  # other traffic meanwhile, so the window gets every chance to rotate
            clock.now += int(0.05 * WINDOW_NS)
            store(EventRecord(2, 1, 1.0, step))
        clock.now += int(0.04 * WINDOW_NS)  # 0.99 of the window after the first copy
        retry = store(EventRecord(1, 1, 2.0, 2, event_id="order-1"))
    assert (retry[0], retry[1]) == (first[0], True)


def test_a_redelivery_after_a_batch_interleaving_two_partitions_keeps_each_seq(tmp_path: Path) -> None:
    """One batch alternating partitions: each partition's offsets are consecutive but its
    seqs are not (every other one), so no two of them make one run of the source index."""
    clock = FakeClock()
    batch = [EventRecord(n, 1, 1.0, n, source=SourcePosition("orders", n % 2, n // 2)) for n in range(12)]
    with Wal.open(tmp_path, WalConfig(dedup_window=1.0), clock=clock) as wal:
        first = wal.append_batch(batch)
        assert [r[0] for r in first] == list(range(1, 13))
        clock.now += 3 * 10**9  # past the dedup window: only the source index knows them
        again = wal.append_batch(list(reversed(batch)))
    assert [(r[0], r[2]) for r in again] == [(seq, True) for seq in range(12, 0, -1)]


def test_truncate_before_checkpoint_plus_one_keeps_the_segment_holding_it(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10, 10, 10], WalConfig(segment_size=1))  # segments start at 1, 11, 21, 31
    with Wal.open(tmp_path, WalConfig(segment_size=1)) as wal:
        wal.checkpoint(20)
        with pytest.raises(ValueError, match="after the checkpoint"):
            wal.truncate_before(22)  # one past the limit: would let seq 21 go
        assert len(segments(tmp_path)) == 4
        assert wal.truncate_before(21) == 2  # the segments of 1..10 and 11..20, nothing else
        assert [seq for seq, _ in wal.replay(21)][:1] == [21]
    assert [p.name for p in segments(tmp_path)] == ["00000000000000000021.wal", "00000000000000000031.wal"]


def test_after_truncation_the_source_index_is_what_a_reopen_rebuilds(tmp_path: Path) -> None:
    config = WalConfig(segment_size=500)  # two 10-record frames per segment
    with Wal.open(tmp_path, config) as wal:
        for frame in range(6):  # offsets 11k..11k+9 (one skipped between frames: each frame its own run)
            wal.append_batch(records(10, 11 * frame))  # seqs 10k+1..10k+10
    assert [p.name[:20].lstrip("0") for p in segments(tmp_path)] == ["1", "21", "41"]
    probes = (22, 27, 33, 40)  # offsets in the frames of seqs 21..30 and 31..40, kept on disk
    with Wal.open(tmp_path, config) as wal:
        wal.checkpoint(30)
        assert wal.truncate_before(31) == 1  # 1..20 go; 21..40 stay, 21..30 included
        live = [wal.append_batch(records(1, offset))[0] for offset in probes]
    with Wal.open(tmp_path, config) as wal:
        reopened = [wal.append_batch(records(1, offset))[0] for offset in probes]
        assert wal.last_seq == 60
    assert live == reopened == [(21, True, True), (26, True, True), (31, True, True), (38, True, True)]


def test_an_unexpected_error_in_the_writer_fails_every_caller_and_never_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> bytes:
        raise RuntimeError("a bug in the writer")

    with Wal.open(tmp_path) as wal:
        monkeypatch.setattr(walcore.writer, "encode_frame", broken)
        futures = [wal.append(record) for record in records(50)]
        batch = wal.submit_batch(records(10, 100))
        for future in [*futures, batch]:
            with pytest.raises(WalFailed, match="a bug in the writer"):
                future.result(timeout=10)
        with pytest.raises(WalFailed):
            wal.append_batch(records(1, 200))
        assert wal.last_seq == 0


def test_long_event_ids_are_keyed_by_a_fixed_size_digest_and_still_deduplicate(tmp_path: Path) -> None:
    from walcore.format import encode_body

    long_id, short_id = "😀" * 256, "order-42"
    keys = encode_body(
        [EventRecord(1, 1, 1.0, 1, long_id), EventRecord(1, 1, 1.0, 1, short_id), EventRecord(1, 1, 1.0, 1)]
    ).keys
    assert isinstance(keys[0], bytes) and len(keys[0]) == 19  # not 1 KB of emoji
    assert keys[1] == short_id and len(keys[2]) == 26  # short ids as they are; content rows
    with Wal.open(tmp_path) as wal:
        first = wal.append(EventRecord(1, 1, 1.0, 1, long_id)).result()
        retry = wal.append(EventRecord(2, 2, 2.0, 2, long_id)).result()
        other = wal.append(EventRecord(1, 1, 1.0, 1, long_id[:-1] + "😁")).result()
    assert (retry.seq, retry.duplicate) == (first.seq, True) and not other.duplicate
    with Wal.open(tmp_path) as wal:  # the window is rebuilt with the same keys
        assert wal.append(EventRecord(3, 3, 3.0, 3, long_id)).result() == (first.seq, True, False)


def test_the_source_index_forgets_its_oldest_runs_beyond_its_bound() -> None:
    from walcore.sources import SourceIndex

    index = SourceIndex(max_runs=8)
    for run in range(20):  # offsets 0..4, 10..14, ...: a gap after each run, so nothing merges
        index.add("t", 0, run * 10, 5, run * 5 + 1)
    assert index.lookup("t", 0, 192) == 19 * 5 + 3  # the newest still answer
    assert index.lookup("t", 0, 2) is None  # the oldest were forgotten
    assert index.last_offset("t", 0) == 194
    assert len(index._parts[("t", 0)].firsts) <= 8
