"""The group-commit writer: concurrency, drain, dedup, redelivery, validation, faults."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from tests.support.walcore_helpers import records, replayed, segments
from walcore import (
    EventRecord,
    InvalidRecord,
    SourcePosition,
    Wal,
    WalClosed,
    WalConfig,
    WalFailed,
    WalLocked,
)
from walcore.sources import SourceIndex


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


def test_concurrent_appenders_from_8_threads_get_unique_gap_free_seqs(tmp_path: Path) -> None:
    per_thread = 500
    results: list[list[int]] = [[] for _ in range(8)]
    with Wal.open(tmp_path, WalConfig(batch_timeout=0.002)) as wal:

        def work(t: int) -> None:
            futures = [wal.append(EventRecord(t * 10_000 + i, 1, 1.0, i)) for i in range(per_thread)]
            results[t] = [f.result().seq for f in futures]

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    all_seqs = sorted(s for r in results for s in r)
    assert all_seqs == list(range(1, 8 * per_thread + 1))
    for r in results:  # one thread's appends keep their order
        assert r == sorted(r)
    stored = {rec.entity_id: seq for seq, rec in replayed(tmp_path)}
    assert len(stored) == 8 * per_thread


def test_shutdown_drains_every_submitted_future(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path, WalConfig(batch_timeout=10.0, batch_size=10**6))  # would wait 10 s for company
    futures = [wal.append(r) for r in records(300)]
    wal.close()  # must not wait for the timeout, must not drop anything
    assert [f.result(timeout=0).seq for f in futures] == list(range(1, 301))
    with pytest.raises(WalClosed):
        wal.append(records(1)[0])
    assert len(replayed(tmp_path)) == 300


def test_producer_retry_with_same_event_id_gets_the_original_seq(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        first = wal.append(EventRecord(1, 1, 1.0, 10, event_id="evt-1")).result()
        retry = wal.append(EventRecord(1, 1, 1.0, 11, event_id="evt-1")).result()  # content differs
        other = wal.append(EventRecord(1, 1, 1.0, 10, event_id="evt-2")).result()
    assert (first.seq, first.duplicate) == (1, False)
    assert (retry.seq, retry.duplicate, retry.redelivery) == (1, True, False)
    assert (other.seq, other.duplicate) == (2, False)


def test_same_content_without_event_id_inside_one_batch_is_stored_once(tmp_path: Path) -> None:
    record = EventRecord(5, 2, 3.0, 4)
    with Wal.open(tmp_path) as wal:
        results = wal.append_batch([record, EventRecord(6, 2, 3.0, 4), record])
    assert [(r.seq, r.duplicate) for r in results] == [(1, False), (2, False), (1, True)]
    assert len(replayed(tmp_path)) == 2


def test_dedup_window_expires_and_is_rebuilt_after_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    config = WalConfig(dedup_window=10.0)
    record = EventRecord(9, 1, 1.0, 1)
    with Wal.open(tmp_path, config, clock=clock) as wal:
        assert wal.append(record).result().seq == 1
        clock.now += 5 * 10**9
    with Wal.open(tmp_path, config, clock=clock) as wal:  # rebuilt from the log
        assert wal.append(record).result() == (1, True, False)
        clock.now += 21 * 10**9  # beyond twice the window: certainly expired
        assert wal.append(record).result() == (2, False, False)
    clock.now += 25 * 10**9
    with Wal.open(tmp_path, config, clock=clock) as wal:  # too old to be rebuilt
        assert wal.append(record).result() == (3, False, False)


def test_kafka_redelivery_is_recognised_long_after_the_window(tmp_path: Path) -> None:
    clock = FakeClock()
    config = WalConfig(dedup_window=1.0)
    batch = records(50, topic="orders", partition=3)
    with Wal.open(tmp_path, config, clock=clock) as wal:
        wal.append_batch(batch)
    clock.now += 3600 * 10**9
    with Wal.open(tmp_path, config, clock=clock) as wal:
        again = wal.append_batch(batch[10:20] + records(5, 50, topic="orders", partition=3))
        assert wal.source_offsets() == {("orders", 3): 54}
    assert [(r.seq, r.duplicate, r.redelivery) for r in again[:10]] == [(s, True, True) for s in range(11, 21)]
    assert [r.seq for r in again[10:]] == [51, 52, 53, 54, 55]


@pytest.mark.parametrize(
    "field,record",
    [
        ("entity_id", EventRecord(-1, 1, 1.0, 1)),
        ("signal_type", EventRecord(1, 65536, 1.0, 1)),
        ("weight", EventRecord(1, 1, float("nan"), 1)),
        ("weight", EventRecord(1, 1, 10**400, 1)),  # an int no f64 can hold
        ("timestamp_nanos", EventRecord(1, 1, 1.0, 2**64)),
        ("event_id", EventRecord(1, 1, 1.0, 1, event_id="")),
        ("source.partition", EventRecord(1, 1, 1.0, 1, source=SourcePosition("t", -1, 0))),
        ("record", (1, 1, 1.0, 1, None, None, "a seventh field")),  # not an EventRecord: never stored in part
        ("source", EventRecord(1, 1, 1.0, 1, source=("t", 0, 3, "extra"))),  # type: ignore[arg-type]
    ],
)
def test_invalid_field_is_named_and_nothing_of_the_batch_is_written(
    tmp_path: Path, field: str, record: EventRecord
) -> None:
    with Wal.open(tmp_path) as wal:
        with pytest.raises(InvalidRecord) as err:
            wal.append_batch([*records(3), record])
        assert err.value.field == field and err.value.index == 3
        assert isinstance(err.value, ValueError)
        with pytest.raises(InvalidRecord):
            wal.append(record)
        assert wal.last_seq == 0


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with Wal.open(tmp_path), pytest.raises(WalLocked, match="in use"):
        Wal.open(tmp_path)


def test_fsync_raising_eio_fails_every_caller_and_refuses_further_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(5))
        calls = []

        def broken_fdatasync(fd: int) -> None:
            calls.append(fd)
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", broken_fdatasync)
        futures = [wal.append(r) for r in records(3, 5)]
        with pytest.raises(WalFailed, match=r"EIO|Input/output"):
            futures[0].result()
        for f in futures:
            assert isinstance(f.exception(), WalFailed)
        with pytest.raises(WalFailed):
            wal.append_batch(records(2, 10))
        assert len(calls) == 1  # never retried
        assert wal.last_seq == 5
    monkeypatch.undo()
    # the restart recovers: whatever reached the file unsynced is verified or cut, never half-trusted
    assert [s for s, _ in replayed(tmp_path)][:5] == [1, 2, 3, 4, 5]


def test_fsync_raising_eio_under_append_batch_returns_no_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # append_batch builds its results while the fdatasync runs: a failed fdatasync must
    # still be what the caller gets, never those results.
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(5))
        monkeypatch.setattr(os, "fdatasync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
        with pytest.raises(WalFailed, match="I/O error"):
            wal.append_batch(records(500, 5))
        assert wal.last_seq == 5


def test_write_raising_enospc_reports_no_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import walcore.files

    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(2))
        real_write = os.write

        def half_then_enospc(fd: int, data: bytes) -> int:
            if len(data) > 100:
                return real_write(fd, bytes(data)[:50])  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(walcore.files.os, "write", half_then_enospc)
        with pytest.raises(WalFailed, match="No space"):
            wal.append_batch(records(10, 2))
        assert wal.last_seq == 2
    monkeypatch.undo()
    with Wal.open(tmp_path) as wal:  # the partial frame is a torn tail: cut, kept aside
        assert wal.last_seq == 2
        assert wal.append_batch(records(1, 50))[0].seq == 3
    assert len(list(tmp_path.glob("*.broken-*"))) == 1


def test_segments_rotate_at_the_size_limit_and_are_named_by_first_seq(tmp_path: Path) -> None:
    with Wal.open(tmp_path, WalConfig(segment_size=2000)) as wal:
        for i in range(10):
            wal.append_batch(records(20, i * 20))
    # a 20-record frame is 637 bytes: a segment takes frames until it reaches 2000 bytes (4 frames)
    assert [int(p.name[:20]) for p in segments(tmp_path)] == [1, 81, 161]
    # 4 frames, then an 88-byte seal frame naming the next segment's first seq
    assert [p.stat().st_size for p in segments(tmp_path)] == [2548 + 88, 2548 + 88, 1274]
    assert [s for s, _ in replayed(tmp_path)] == list(range(1, 201))


def test_submitted_batches_commit_in_order_each_as_its_own_frame(tmp_path: Path) -> None:
    from walcore.scan import scan_log

    with Wal.open(tmp_path) as wal:
        futures = [wal.submit_batch(records(10, i * 10)) for i in range(5)]
        single = wal.append(EventRecord(1, 1, 1.0, 1))
        seqs = [[r.seq for r in f.result()] for f in futures]
        assert single.result().seq == 51
        assert wal.submit_batch([]).result() == []
    assert seqs == [list(range(1 + 10 * i, 11 + 10 * i)) for i in range(5)]
    assert [header.count for _, header in scan_log(tmp_path).segments[0].frames] == [10, 10, 10, 10, 10, 1]


def test_the_lowest_seq_from_an_offset_looks_at_every_later_run() -> None:
    index = SourceIndex()
    index.add("t", 0, 100, 10, 50)  # offsets 100..109 -> seqs 50..59
    index.add("t", 0, 110, 5, 20)  # stored earlier under other seqs: a new run
    index.add("t", 0, 200, 1, 7)
    assert index.lowest_seq_from("t", 0, 105) == 7
    assert index.lowest_seq_from("t", 0, 201) is None
    assert index.lowest_seq_from("t", 0, 0) == 7
    index.add("t", 1, 0, 3, 90)
    assert index.lowest_seq_from("t", 1, 2) == 92  # inside a run: the seq of that offset
    assert index.lowest_seq_from("t", 2, 0) is None
