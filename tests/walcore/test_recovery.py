"""Crash and damage on disk: what open() cuts, what it refuses, and what it never replays."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.support.walcore_helpers import records, replayed, segments, version_1_frame, write_log
from walcore import AppendResult, Wal, WalConfig, WalCorruption
from walcore.checkpoint import NAME as CHECKPOINT_NAME
from walcore.format import HEADER_LEN, decode_header, encode_seal_frame
from walcore.scan import scan_segment
from walcore.segment import segment_name


def frame_starts(path: Path) -> list[int]:
    scan = scan_segment(path.read_bytes(), path, int(path.name[:20]), is_last=True)
    return [offset for offset, _ in scan.frames]


def test_truncation_at_every_byte_offset_of_the_last_frame(tmp_path: Path) -> None:
    golden = tmp_path / "golden"
    write_log(golden, [3, 2])
    seg = segments(golden)[0]
    data = seg.read_bytes()
    last_start = frame_starts(seg)[-1]
    for cut in range(last_start, len(data)):
        wal_dir = tmp_path / f"cut{cut}"
        wal_dir.mkdir()
        (wal_dir / seg.name).write_bytes(data[:cut])
        with Wal.open(wal_dir) as wal:
            assert wal.last_seq == 3, cut
            assert [s for s, _ in wal.replay()] == [1, 2, 3]
            # the next append continues the sequence right after the cut
            assert wal.append_batch(records(1, 100))[0].seq == 4
        kept = list(wal_dir.glob("*.broken-*"))
        assert (len(kept) == 1) == (cut > last_start), cut
        if kept:
            assert kept[0].read_bytes() == data[last_start:cut]


def test_garbage_length_larger_than_the_file_is_cut(tmp_path: Path) -> None:
    write_log(tmp_path, [4])
    seg = segments(tmp_path)[0]
    size = seg.stat().st_size
    with seg.open("ab") as handle:  # a header-sized blob claiming a huge body
        handle.write(b"TWAL" + b"\x01\x01\x00\x00" + (2**31).to_bytes(4, "little") + os.urandom(36))
    assert [s for s, _ in replayed(tmp_path)] == [1, 2, 3, 4]
    assert seg.stat().st_size == size


def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    write_log(tmp_path, [4])
    seg = segments(tmp_path)[0]
    with seg.open("ab") as handle:
        handle.write(bytes(4096))
    assert len(replayed(tmp_path)) == 4
    assert len(list(tmp_path.glob("*.broken-*"))) == 1


def test_zeroed_sector_inside_the_last_frame_is_cut(tmp_path: Path) -> None:
    write_log(tmp_path, [2, 200])
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    last = frame_starts(seg)[-1]
    data[last + 512 : last + 1024] = bytes(512)
    seg.write_bytes(bytes(data))
    assert [s for s, _ in replayed(tmp_path)] == [1, 2]


def test_stale_valid_looking_frames_after_a_torn_point_are_never_replayed(tmp_path: Path) -> None:
    old = tmp_path / "old"
    write_log(old, [5])  # a valid frame for seqs 1..5, from another life of the file
    stale = segments(old)[0].read_bytes()
    write_log(tmp_path, [2])
    seg = segments(tmp_path)[0]
    with seg.open("ab") as handle:
        handle.write(bytes(100) + stale)  # torn point (zeros), then a stale valid frame
    replay = replayed(tmp_path)
    assert [s for s, _ in replay] == [1, 2]


def test_damage_followed_by_an_intact_continuing_frame_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    write_log(tmp_path, [3, 3, 3])
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    middle = frame_starts(seg)[1]
    data[middle + 20] ^= 0x01  # header bit flip in a frame that is followed by an acked one
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        Wal.open(tmp_path)
    assert err.value.file == seg and err.value.offset == middle


def test_a_frame_of_an_unknown_format_version_stops_open_and_nothing_is_cut(tmp_path: Path) -> None:
    write_log(tmp_path, [3, 2])
    seg = segments(tmp_path)[0]
    last = frame_starts(seg)[-1]
    data = bytearray(seg.read_bytes())
    data[last + 4] = 9  # as if a newer walcore wrote the last frame (header CRC still right)
    data[last + 44 : last + 48] = zlib.crc32(data[last : last + 44]).to_bytes(4, "little")
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as caught:
        Wal.open(tmp_path)
    assert caught.value.file == seg and caught.value.offset == last and "version 9" in caught.value.reason
    assert seg.read_bytes() == bytes(data) and not list(tmp_path.glob("*.broken-*"))


def test_a_log_written_in_format_version_1_opens_and_continues_in_version_2(tmp_path: Path) -> None:
    now = time.time_ns()
    old = [records(10, 0), records(3, 10)]
    (tmp_path / segment_name(1)).write_bytes(version_1_frame(old[0], 1, now) + version_1_frame(old[1], 11, now))
    with Wal.open(tmp_path) as wal:
        assert wal.last_seq == 13 and wal.source_offsets() == {("signals", 0): 12}
        assert [r for _, r in wal.replay()] == old[0] + old[1]
        # both indexes were rebuilt from the version-1 frames: offsets and content keys
        assert [r.seq for r in wal.append_batch(records(3, 10))] == [11, 12, 13]
        assert wal.append_batch([records(1, 0)[0]._replace(source=None)]) == [AppendResult(1, True)]
        assert [r.seq for r in wal.append_batch(records(5, 13))] == [14, 15, 16, 17, 18]
    seg = segments(tmp_path)[0]
    scan = scan_segment(seg.read_bytes(), seg, 1, is_last=True)
    assert [header.version for _, header in scan.frames] == [1, 1, 2]
    assert [seq for seq, _ in replayed(tmp_path)] == list(range(1, 19))


@pytest.mark.parametrize("where", ["header", "body", "digest"])
def test_bit_flip_in_a_sealed_segment_names_file_and_offset(tmp_path: Path, where: str) -> None:
    write_log(tmp_path, [10, 10, 10], WalConfig(segment_size=1))  # one frame per segment
    sealed = segments(tmp_path)[1]
    data = bytearray(sealed.read_bytes())
    frame_len = decode_header(bytes(data), 0).frame_len  # the batch frame (the seal frame follows it)
    position = {"header": 12, "body": HEADER_LEN + 5, "digest": frame_len - 3}[where]
    data[position] ^= 0x10
    sealed.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        Wal.open(tmp_path)
    assert err.value.file == sealed
    assert err.value.offset == 0
    assert str(sealed) in str(err.value)


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10, 10], WalConfig(segment_size=1))
    _first, middle, last = segments(tmp_path)
    middle.unlink()
    with pytest.raises(WalCorruption) as err:
        Wal.open(tmp_path)
    assert err.value.file == last and "expected 11" in err.value.reason


def test_a_bit_flipped_on_disk_after_open_is_raised_by_replay_never_replayed(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append_batch(records(10))
        wal.append_batch(records(10, 10))
        seg = segments(tmp_path)[0]
        second = frame_starts(seg)[1]
        data = bytearray(seg.read_bytes())
        data[second + HEADER_LEN + 5] ^= 0x10
        seg.write_bytes(bytes(data))
        with pytest.raises(WalCorruption) as err:
            list(wal.replay())
        assert (err.value.file, err.value.offset) == (seg, second)
        # nothing is yielded from a damaged segment, not even its intact first frame
        with pytest.raises(WalCorruption):
            next(wal.replay())


def test_replay_reads_only_the_segments_it_replays(tmp_path: Path) -> None:
    with Wal.open(tmp_path, WalConfig(segment_size=1)) as wal:  # one frame per segment
        for start in (0, 10, 20):
            wal.append_batch(records(10, start))
        first = segments(tmp_path)[0]
        first.write_bytes(b"\0" * first.stat().st_size)  # damage a segment before from_seq
        assert [s for s, _ in wal.replay(15)] == list(range(15, 31))
        with pytest.raises(WalCorruption) as err:
            list(wal.replay(1))
        assert err.value.file == first


@pytest.mark.parametrize(
    ("loss", "reason"),
    [
        ("middle segment deleted", "expected 11"),
        ("last segment emptied", "ends before seq 30"),
        ("last frame cut in half", "seqs up to 30 were durable"),
    ],
)
def test_durable_records_lost_on_disk_after_open_are_raised_by_replay(tmp_path: Path, loss: str, reason: str) -> None:
    with Wal.open(tmp_path, WalConfig(segment_size=1)) as wal:  # one frame per segment
        for start in (0, 10, 20):
            wal.append_batch(records(10, start))
        _first, middle, last = segments(tmp_path)
        if loss == "middle segment deleted":
            middle.unlink()
        else:
            os.truncate(last, 0 if loss == "last segment emptied" else last.stat().st_size // 2)
        with pytest.raises(WalCorruption, match=reason) as err:
            list(wal.replay())
        assert (err.value.file, err.value.offset) == (last, 0)  # each segment holds one frame


def test_missing_first_segment_without_checkpoint_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10], WalConfig(segment_size=1))
    segments(tmp_path)[0].unlink()
    with pytest.raises(WalCorruption, match="earlier segments are missing"):
        Wal.open(tmp_path)


def test_crash_after_creating_the_next_segment_before_writing_it(tmp_path: Path) -> None:
    write_log(tmp_path, [10], WalConfig(segment_size=1))
    (tmp_path / segment_name(11)).touch()  # rotation step 1 done, crash before the frame
    with Wal.open(tmp_path, WalConfig(segment_size=1)) as wal:
        assert wal.last_seq == 10
        assert wal.append_batch(records(5, 10))[0].seq == 11
    assert [s for s, _ in replayed(tmp_path)] == list(range(1, 16))


def test_crash_mid_write_of_the_first_frame_of_a_new_segment(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10], WalConfig(segment_size=1))
    last = segments(tmp_path)[-1]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with Wal.open(tmp_path) as wal:
        assert wal.last_seq == 10
        assert wal.append_batch(records(1, 50))[0].seq == 11


def test_crash_between_checkpoint_and_truncate_then_truncate_again(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10, 10, 10], WalConfig(segment_size=1))
    with Wal.open(tmp_path) as wal:
        wal.checkpoint(25)  # "crash" here: the truncate never ran
    with Wal.open(tmp_path) as wal:
        assert wal.checkpoint_seq == 25
        assert wal.truncate_before(26) == 2  # segments 1..10 and 11..20 go, 21..30 holds seq 25
        assert [s for s, _ in wal.replay(21)][:1] == [21]
    with Wal.open(tmp_path) as wal:
        assert wal.last_seq == 40 and wal.append_batch(records(1, 99))[0].seq == 41


def test_crash_midway_through_truncation_leaves_a_log_that_opens(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10, 10, 10], WalConfig(segment_size=1))
    with Wal.open(tmp_path) as wal:
        wal.checkpoint(35)
    segments(tmp_path)[0].unlink()  # first of three deletions happened, then the crash
    with Wal.open(tmp_path) as wal:
        assert wal.last_seq == 40
        assert wal.truncate_before(36) == 2


def test_truncate_refuses_to_delete_uncheckpointed_records(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10], WalConfig(segment_size=1))
    with Wal.open(tmp_path) as wal, pytest.raises(ValueError, match="checkpoint"):
        wal.truncate_before(15)
    assert len(segments(tmp_path)) == 2


def test_torn_checkpoint_tmp_file_leaves_the_old_checkpoint(tmp_path: Path) -> None:
    write_log(tmp_path, [10])
    with Wal.open(tmp_path) as wal:
        wal.checkpoint(4)
    (tmp_path / f"{CHECKPOINT_NAME}.tmp").write_bytes(b"TCKP\x01")  # crash while writing the new one
    with Wal.open(tmp_path) as wal:
        assert wal.checkpoint_seq == 4


def test_damaged_checkpoint_file_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, [10])
    with Wal.open(tmp_path) as wal:
        wal.checkpoint(4)
    path = tmp_path / CHECKPOINT_NAME
    data = bytearray(path.read_bytes())
    data[9] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        Wal.open(tmp_path)
    assert err.value.file == path


def test_sequence_numbers_are_gap_free_across_segments_restarts_and_truncation(tmp_path: Path) -> None:
    config = WalConfig(segment_size=300)
    seqs = write_log(tmp_path, [7, 1, 13, 2], config)
    with Wal.open(tmp_path, config) as wal:
        wal.checkpoint(20)
        wal.truncate_before(21)
        seqs += [r.seq for r in wal.append_batch(records(5, 500))]
    with Wal.open(tmp_path, config) as wal:
        seqs += [r.seq for r in wal.append_batch(records(3, 900))]
        replay = [s for s, _ in wal.replay()]
    assert seqs == list(range(1, 32))
    assert replay == list(range(replay[0], 32)) and replay[0] <= 21


def seal_len() -> int:
    return len(encode_seal_frame(1, 0))


def test_a_deleted_last_segment_is_reported_by_the_seal_before_it(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10, 10], WalConfig(segment_size=1))  # segments 1, 11, 21
    lost = segments(tmp_path)[-1]
    lost.unlink()
    with pytest.raises(WalCorruption, match=r"continuing at seq 21 .* was lost") as err:
        Wal.open(tmp_path)
    assert err.value.file == segments(tmp_path)[-1]
    verify = subprocess.run(
        [sys.executable, "-m", "walcore.cli", "verify", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 1 and "was lost" in verify.stderr


def test_crash_after_creating_the_next_segment_before_sealing_opens_cleanly(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10], WalConfig(segment_size=1))  # 1 (sealed), 11 (active)
    (tmp_path / segment_name(21)).write_bytes(b"")  # rotating for the next batch: 11 not sealed yet
    with Wal.open(tmp_path, WalConfig(segment_size=1)) as wal:
        assert wal.last_seq == 20
        assert wal.append_batch(records(1, 99))[0].seq == 21
    assert [seq for seq, _ in replayed(tmp_path)] == list(range(1, 22))


def test_a_seal_torn_by_a_crash_is_cut_when_the_next_segment_is_still_empty(tmp_path: Path) -> None:
    write_log(tmp_path, [10], WalConfig(segment_size=1))
    full = segments(tmp_path)[0]
    data = full.read_bytes()
    full.write_bytes(data + encode_seal_frame(11, 0)[:40])  # crash mid-seal...
    (tmp_path / segment_name(11)).write_bytes(b"")  # ...after the next segment was created
    with Wal.open(tmp_path, WalConfig(segment_size=1)) as wal:
        assert wal.last_seq == 10
        assert [seq for seq, _ in wal.replay()] == list(range(1, 11))
    assert full.read_bytes() == data  # cut back to the last intact frame
    assert list(tmp_path.glob("*.broken-*"))


def test_a_log_written_before_seals_still_opens(tmp_path: Path) -> None:
    write_log(tmp_path, [10, 10, 10], WalConfig(segment_size=1))
    for path in segments(tmp_path)[:-1]:
        path.write_bytes(path.read_bytes()[: -seal_len()])
    with Wal.open(tmp_path) as wal:
        assert [seq for seq, _ in wal.replay()] == list(range(1, 31))


@pytest.mark.parametrize("seq,reason", [(2**64 - 1, "beyond any seq"), (500, "log ends at seq 0")])
def test_a_checkpoint_beyond_the_log_is_corruption_not_a_dead_writer(tmp_path: Path, seq: int, reason: str) -> None:
    """A valid-checksum CHECKPOINT at 2**64-1 in an empty WAL used to kill the writer thread
    with a struct.error and leave every append waiting for ever."""
    from walcore.checkpoint import encode_checkpoint

    (tmp_path / CHECKPOINT_NAME).write_bytes(encode_checkpoint(seq))
    with pytest.raises(WalCorruption, match=reason) as err:
        Wal.open(tmp_path)
    assert err.value.file == tmp_path / CHECKPOINT_NAME


def test_a_checkpoint_past_the_last_stored_seq_is_corruption(tmp_path: Path) -> None:
    from walcore.checkpoint import encode_checkpoint

    write_log(tmp_path, [10])
    (tmp_path / CHECKPOINT_NAME).write_bytes(encode_checkpoint(11))
    with pytest.raises(WalCorruption, match="log ends at seq 10"):
        Wal.open(tmp_path)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_a_damaged_final_frame_of_a_segment_that_is_not_the_last_is_corruption_never_a_torn_tail(
    tmp_path: Path, damage: str
) -> None:
    """Only the last segment can have a torn tail: a crash never leaves an earlier one
    short, so its damaged end is damage to acknowledged data, and nothing is cut."""
    write_log(tmp_path, [10, 10, 10], WalConfig(segment_size=1))  # batch frame + seal per segment
    middle = segments(tmp_path)[1]
    data = middle.read_bytes()
    middle.write_bytes(data[:-5] if damage == "cut" else data[:-3] + bytes([data[-3] ^ 0x40]) + data[-2:])
    damaged = middle.read_bytes()
    with pytest.raises(WalCorruption) as err:
        Wal.open(tmp_path)
    assert err.value.file == middle
    assert middle.read_bytes() == damaged  # nothing cut
    assert not list(tmp_path.glob("*.broken-*"))


@pytest.mark.parametrize("position,value", [(16, None), (8, 5), (4, None)])
def test_a_checkpoint_with_a_bad_checksum_or_a_changed_seq_inside_the_log_is_refused(
    tmp_path: Path, position: int, value: int | None
) -> None:
    """The checksum alone must catch it: a seq changed from 4 to 5 is still inside the log
    (seqs 1..10), a damaged checksum byte leaves every field plausible."""
    write_log(tmp_path, [10])
    with Wal.open(tmp_path) as wal:
        wal.checkpoint(4)
    path = tmp_path / CHECKPOINT_NAME
    data = bytearray(path.read_bytes())
    data[position] = value if value is not None else data[position] ^ 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        Wal.open(tmp_path)
    assert err.value.file == path and "checksum" in err.value.reason
