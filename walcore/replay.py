"""Reading stored records back: every record from a seq on (``Wal.replay``, ``walcore
dump``), and the dedup keys of the newest frames (to rebuild the window on open).

Worst case: one segment's bytes in memory at a time (``segment_size`` plus one frame).
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Iterator
from pathlib import Path

from walcore.errors import WalCorruption
from walcore.format import FrameHeader, decode_records, dedup_keys
from walcore.records import EventRecord
from walcore.scan import LogScan, check_continuity, scan_segment, tail_may_tear
from walcore.segment import list_segments


def replay_log(
    directory: Path, from_seq: int, until_seq: int, skip: Container[int] = ()
) -> Iterator[tuple[int, EventRecord]]:
    """Replay (seq, record) for ``from_seq <= seq <= until_seq``, verifying on read, except
    the seqs in ``skip`` (the voided ones, for a replay of live events).

    Each segment holding wanted seqs is read once and verified whole (every frame, as on
    open) before any of its records is yielded, so damage done since the log was opened
    or scanned raises WalCorruption instead of being replayed. Segments wholly before
    ``from_seq`` are not read at all. A log ending before ``until_seq`` (a durable seq the
    caller knows of is gone) is damage too.
    """
    if from_seq > until_seq:
        return
    segments = list_segments(directory)
    expected: int | None = None
    path = directory
    for index, (first_seq, path) in enumerate(segments):
        following = segments[index + 1][0] if index + 1 < len(segments) else None
        if following is not None and following <= from_seq:
            continue
        if first_seq > until_seq:
            return
        if expected is not None:
            check_continuity(path, first_seq, expected)
        data = path.read_bytes()
        segment = scan_segment(data, path, first_seq, is_last=tail_may_tear(segments, index))
        if segment.torn is not None and segment.next_seq <= until_seq:
            # What looks like a torn tail holds seqs already durable: damage, not a crash.
            raise WalCorruption(
                path, segment.torn.offset, f"{segment.torn.reason}, but seqs up to {until_seq} were durable"
            )
        for offset, header in segment.frames:
            if header.last_seq < from_seq:
                continue
            if header.base_seq > until_seq:
                return
            for seq, record in enumerate(decode_records(data, offset, header), header.base_seq):
                if from_seq <= seq <= until_seq and seq not in skip:
                    yield seq, record
        expected = segment.next_seq
        if expected > until_seq:
            return
    raise WalCorruption(
        path, 0, f"the log ends before seq {until_seq}, which was durable: a segment is missing or was cut"
    )


def recent_keys(scan: LogScan, since_ns: int, max_keys: int) -> list[tuple[Hashable, int]]:
    """Dedup keys of frames stored at or after ``since_ns`` (newest ``max_keys`` at most),
    oldest first, so that loading them in order leaves the newest seq for a repeated key."""
    picked: list[tuple[Path, int, FrameHeader]] = []
    total = 0
    for segment in reversed(scan.segments):
        for offset, header in reversed(segment.frames):
            if header.batch_ts < since_ns or total >= max_keys:
                break
            picked.append((segment.path, offset, header))
            total += header.count
        else:
            continue
        break
    pairs: list[tuple[Hashable, int]] = []
    cache: dict[Path, bytes] = {}
    for path, offset, header in reversed(picked):
        data = cache.get(path)
        if data is None:
            cache.clear()
            data = cache[path] = path.read_bytes()
        keys = dedup_keys(data, offset, header)
        pairs.extend(
            pair
            for pair in zip(keys, range(header.base_seq, header.base_seq + header.count))
            if pair[1] not in scan.voided
        )  # a voided event is nobody's original
    return pairs
