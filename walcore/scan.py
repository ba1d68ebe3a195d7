"""Verifying a WAL: every frame, the torn tail, segment continuity, the indexes to rebuild.

The rules (ARCHITECTURE invariant 3, after etcd's ``decoder.go``/``repair.go``):

* Every frame is checked: header CRC, lengths, seq continuity, BLAKE3 digest.
* Only the last segment holding bytes (``tail_may_tear``) may end in a torn tail (a
  crash mid-write): a partial frame, a zero-filled or garbage header, a length running
  past the end of the file, or a final frame whose digest fails. Scanning only *finds*
  it (a ``TornTail`` value); ``walcore.repair`` cuts it, keeping the bytes in a
  ``.broken`` file.
* A full segment ends with a seal naming the next segment's first seq: a sealed last
  segment means later segments were lost, and that is an error too.
* A torn point followed later in the file by an intact frame that continues the log is
  not a torn write (writes are sequential and each frame is fsynced before the next):
  that is damage to acknowledged data, and it is an error, like every other damage:
  ``WalCorruption(file, offset, reason)``. Frames after a torn point that do not
  continue the log (stale bytes) are cut with it and never replayed.

Worst cases: a segment is read into memory whole (``segment_size`` plus at most one
frame, since rotation happens after the frame that crosses the limit); ``scan_log``
holds one segment's bytes at a time, plus every frame header of the log (48 bytes
each as a tuple, about 150 bytes of Python objects per frame).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from walcore.checkpoint import NAME as CHECKPOINT_NAME
from walcore.checkpoint import read_checkpoint
from walcore.errors import WalCorruption
from walcore.format import (
    FRAME_SEAL,
    FRAME_VOID,
    MAGIC,
    BadHeader,
    FrameHeader,
    SourceRun,
    decode_header,
    decode_source_runs,
    decode_void,
    digest_ok,
)
from walcore.segment import list_segments, segment_name
from walcore.sources import SourceIndex

_MAGIC_BYTES = struct.pack("<I", MAGIC)


@dataclass(frozen=True)
class TornTail:
    path: Path
    offset: int
    size: int
    reason: str

    def describe(self) -> str:
        return f"torn tail in {self.path} at byte {self.offset} ({self.size - self.offset} bytes: {self.reason})"


@dataclass
class SegmentScan:
    path: Path
    first_seq: int
    next_seq: int
    valid_end: int
    frames: list[tuple[int, FrameHeader]]  # batch frames: (byte offset, header)
    runs: list[tuple[int, list[SourceRun]]]
    torn: TornTail | None = None
    voided: list[int] = field(default_factory=list)  # seqs its void frames void
    sealed_at: int | None = None  # byte offset of its seal frame (the segment is full and closed)


def scan_segment(data: bytes, path: Path, first_seq: int, *, is_last: bool) -> SegmentScan:
    """Verify one segment's bytes. Pure: the caller reads the file.

    Returns the intact frames (and where a torn tail starts, when ``is_last``: the last
    segment holding any bytes); raises WalCorruption for any other damage.
    """
    offset = 0
    expected = first_seq
    frames: list[tuple[int, FrameHeader]] = []
    runs: list[tuple[int, list[SourceRun]]] = []
    voided: list[int] = []
    sealed_at: int | None = None
    size = len(data)
    while offset < size:
        if sealed_at is not None:
            raise WalCorruption(path, offset, "bytes after the segment's seal frame")
        header = decode_header(data, offset)
        problem = None
        if isinstance(header, BadHeader):
            if header.unreadable:
                raise WalCorruption(path, offset, header.reason)
            problem = header.reason
        elif offset + header.frame_len > size:
            problem = f"frame of {header.frame_len} bytes runs past the end of the file ({size} bytes)"
        elif not digest_ok(data, offset, header):
            if not is_last or offset + header.frame_len != size:
                raise WalCorruption(path, offset, "BLAKE3 digest mismatch in a complete frame")
            problem = "BLAKE3 digest mismatch in the final frame"
        if problem is not None:
            if not is_last:
                raise WalCorruption(path, offset, problem)
            _refuse_if_log_continues(data, path, offset, expected)
            torn = TornTail(path, offset, size, problem)
            return SegmentScan(path, first_seq, expected, offset, frames, runs, torn, voided, sealed_at)
        assert isinstance(header, FrameHeader)
        if header.base_seq != expected:
            raise WalCorruption(path, offset, f"frame starts at seq {header.base_seq}, expected {expected}")
        if header.kind == FRAME_VOID:
            seqs, _reason = decode_void(data, offset, header)
            if not all(0 < seq < expected for seq in seqs):
                raise WalCorruption(path, offset, f"void entry names seqs outside 1..{expected - 1}")
            voided.extend(seqs)
        elif header.kind == FRAME_SEAL:
            sealed_at = offset
        else:
            frames.append((offset, header))
            if header.src_len:
                runs.append((header.base_seq, decode_source_runs(data, offset, header)))
        expected += header.seqs_taken
        offset += header.frame_len
    return SegmentScan(path, first_seq, expected, offset, frames, runs, None, voided, sealed_at)


def _refuse_if_log_continues(data: bytes, path: Path, torn_at: int, expected: int) -> None:
    """An intact frame with seq >= expected after the damage means acknowledged data
    was damaged in place, not a write torn by a crash."""
    search = data.find(_MAGIC_BYTES, torn_at + 1)
    while search != -1:
        header = decode_header(data, search)
        if (
            isinstance(header, FrameHeader)
            and header.base_seq >= expected
            and search + header.frame_len <= len(data)
            and digest_ok(data, search, header)
        ):
            raise WalCorruption(
                path,
                torn_at,
                f"damaged frame followed by an intact frame at byte {search} (seq {header.base_seq}): "
                "acknowledged data was damaged in place, this is not a torn write",
            )
        search = data.find(_MAGIC_BYTES, search + 1)


@dataclass
class LogScan:
    checkpoint: int
    segments: list[SegmentScan] = field(default_factory=list)
    next_seq: int = 1
    sources: SourceIndex = field(default_factory=SourceIndex)
    voided: set[int] = field(default_factory=set)  # seqs void entries void: not live events

    @property
    def torn(self) -> TornTail | None:
        return next((s.torn for s in reversed(self.segments) if s.torn is not None), None)

    @property
    def first_seq(self) -> int:
        return self.segments[0].first_seq if self.segments else self.next_seq

    @property
    def frame_count(self) -> int:
        return sum(len(s.frames) for s in self.segments)


def scan_log(directory: Path) -> LogScan:
    """Verify the whole log (read-only): segment continuity, every frame, the checkpoint."""
    checkpoint = read_checkpoint(directory)
    scan = LogScan(checkpoint, next_seq=checkpoint + 1)
    segments = list_segments(directory)
    for index, (first_seq, path) in enumerate(segments):
        if index == 0:
            if first_seq > checkpoint + 1:
                raise WalCorruption(
                    path,
                    0,
                    f"the log starts at seq {first_seq} but only seqs up to {checkpoint} are "
                    "checkpointed: earlier segments are missing",
                )
        else:
            check_continuity(path, first_seq, scan.next_seq)
        is_last = index == len(segments) - 1
        segment = scan_segment(path.read_bytes(), path, first_seq, is_last=tail_may_tear(segments, index))
        if not segment.frames and not segment.voided and not is_last:
            raise WalCorruption(path, 0, "empty segment in the middle of the log")
        scan.segments.append(segment)
        scan.next_seq = segment.next_seq
        scan.voided.update(segment.voided)
        for base_seq, runs in segment.runs:
            for run in runs:
                scan.sources.add(run.topic, run.partition, run.first_offset, run.count, base_seq + run.first_index)
    last = scan.segments[-1] if scan.segments else None
    if last is not None and last.sealed_at is not None:
        raise WalCorruption(
            last.path,
            last.sealed_at,
            f"the segment is sealed, the log continuing at seq "
            f"{last.next_seq} in {segment_name(last.next_seq)}, which is missing: the log's "
            f"tail (seqs {last.next_seq} on) was lost",
        )
    # (After the seal check: a lost last segment is said as such, checkpointed or not.)
    if checkpoint and (last is None or checkpoint >= last.next_seq):
        raise WalCorruption(
            directory / CHECKPOINT_NAME,
            8,
            f"the checkpoint is at seq {checkpoint} but the log "
            f"ends at seq {scan.next_seq - 1 if last else 0}: segments are missing",
        )
    return scan


def tail_may_tear(segments: list[tuple[int, Path]], index: int) -> bool:
    """A torn write can only be in the last segment holding bytes: the last one, or the
    one before an empty last one (a crash while sealing it, after its successor was made)."""
    return all(path.stat().st_size == 0 for _, path in segments[index + 1 :])


def check_continuity(path: Path, first_seq: int, expected: int) -> None:
    """A segment must start where the one before it ended: the one rule for scan and replay."""
    if first_seq != expected:
        raise WalCorruption(
            path, 0, f"segment starts at seq {first_seq}, expected {expected}: a segment is missing or misnamed"
        )
