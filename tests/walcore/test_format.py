"""The frame codec, byte for byte (pure functions: no files)."""

from __future__ import annotations

import math
import re
import struct
import zlib
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.walcore_helpers import version_1_frame
from walcore import EventRecord, InvalidRecord, SourcePosition
from walcore.format import (
    HEADER_LEN,
    MAGIC,
    BadHeader,
    FrameHeader,
    decode_header,
    decode_records,
    dedup_keys,
    digest_ok,
    encode_body,
    encode_frame,
    source_runs,
)

sources = st.one_of(
    st.none(),
    st.builds(
        SourcePosition, st.sampled_from(["a", "topic-b", "ü"]), st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1)
    ),
)
event_records = st.builds(
    EventRecord,
    entity_id=st.integers(0, 2**64 - 1),
    signal_type=st.integers(0, 2**16 - 1),
    weight=st.floats(allow_nan=False, allow_infinity=False),
    timestamp_nanos=st.integers(0, 2**64 - 1),
    event_id=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    source=sources,
)


# Kafka-like sources: stretches of consecutive offsets of a few partitions, sometimes
# continuing an earlier stretch, sometimes interrupted by a record with no source.
stretches = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2), st.integers(0, 40), st.integers(1, 120), st.booleans()),
    min_size=1,
    max_size=12,
)


def _kafka_like(spec: list[tuple[str, int, int, int, bool]]) -> list[SourcePosition | None]:
    sources: list[SourcePosition | None] = []
    for topic, partition, start, length, then_none in spec:
        sources.extend(SourcePosition(topic, partition, start + i) for i in range(length))
        if then_none:
            sources.append(None)
    return sources


@settings(max_examples=300, deadline=None)
@given(spec=stretches)
def test_source_runs_cover_every_source_in_maximal_runs(spec: list[tuple[str, int, int, int, bool]]) -> None:
    sources = _kafka_like(spec)
    runs = source_runs(sources)
    rebuilt: list[SourcePosition | None] = [None] * len(sources)
    for run in runs:
        for i in range(run.count):
            assert rebuilt[run.first_index + i] is None
            rebuilt[run.first_index + i] = SourcePosition(run.topic, run.partition, run.first_offset + i)
    assert rebuilt == sources
    for before, after in pairwise(runs):
        continues = (
            before.first_index + before.count == after.first_index
            and before.topic == after.topic
            and before.partition == after.partition
            and before.first_offset + before.count == after.first_offset
        )
        assert not continues, f"{before} and {after} should be one run"


@settings(max_examples=300, deadline=None)
@given(
    batch=st.lists(event_records, min_size=1, max_size=60), base_seq=st.integers(1, 2**40), ts=st.integers(0, 2**64 - 1)
)
def test_round_trip_of_random_batches(batch: list[EventRecord], base_seq: int, ts: int) -> None:
    frame = encode_frame(encode_body(batch), base_seq, ts)
    header = decode_header(frame, 0)
    assert isinstance(header, FrameHeader)
    assert (header.base_seq, header.count, header.batch_ts, header.frame_len) == (base_seq, len(batch), ts, len(frame))
    assert digest_ok(frame, 0, header)
    assert decode_records(frame, 0, header) == batch


def test_header_layout_is_the_documented_one() -> None:
    frame = encode_frame(encode_body([EventRecord(7, 2, 1.5, 99)]), base_seq=42, batch_ts=123)
    magic, version, ftype, flags, body_len, count, base_seq, ts, ids_len, src_len, reserved, crc = struct.unpack_from(
        "<IBBHIIQQIIII", frame
    )
    assert frame[:4] == b"TWAL" and magic == MAGIC
    assert (version, ftype, flags, count, base_seq, ts, ids_len, src_len, reserved) == (2, 1, 0, 1, 42, 123, 0, 0, 0)
    assert body_len == 26 and len(frame) == HEADER_LEN + 26 + 32
    assert crc == zlib.crc32(frame[:44])
    assert struct.unpack_from("<QHdQ", frame, HEADER_LEN) == (7, 2, 1.5, 99)


def test_worked_example_in_the_docs_is_what_the_codec_writes() -> None:
    text = (Path(__file__).parents[2] / "docs" / "wal-format.md").read_text()
    example = text.split("### Worked example", 1)[1].split("```", 2)[1]
    documented = bytes.fromhex(
        "".join(" ".join(line[6:54].split()) for line in example.splitlines() if re.match(r"^[0-9a-f]{4}  ", line))
    )
    record = EventRecord(42, 1, 1.5, 1_700_000_000_000_000_000, None, SourcePosition("signals", 3, 7))
    assert encode_frame(encode_body([record]), base_seq=1, batch_ts=1_700_000_000_123_456_789) == documented


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(event_records, min_size=1, max_size=40))
def test_version_1_frames_are_still_read(batch: list[EventRecord]) -> None:
    old = version_1_frame(batch, 5, 6)
    header = decode_header(old, 0)
    assert isinstance(header, FrameHeader) and header.version == 1 and digest_ok(old, 0, header)
    assert decode_records(old, 0, header) == batch
    new = encode_frame(encode_body(batch), 5, 6)
    assert dedup_keys(old, 0, header) == dedup_keys(new, 0, decode_header(new, 0))  # type: ignore[arg-type]


def test_an_intact_header_of_an_unknown_version_is_unreadable_not_torn() -> None:
    frame = bytearray(encode_frame(encode_body([EventRecord(1, 1, 1.0, 1)]), 1, 1))
    frame[4] = 3
    frame[44:48] = struct.pack("<I", zlib.crc32(frame[:44]))
    header = decode_header(bytes(frame), 0)
    assert isinstance(header, BadHeader) and header.unreadable and "version 3" in header.reason


def test_torn_length_prefix_is_never_trusted() -> None:
    frame = bytearray(encode_frame(encode_body([EventRecord(1, 1, 1.0, 1)]), 1, 1))
    frame[8] ^= 0xFF  # body_len: a torn/garbage length
    assert isinstance(decode_header(bytes(frame), 0), BadHeader)


def test_zero_filled_bytes_are_not_a_header() -> None:
    assert decode_header(bytes(200), 0) == BadHeader("zero-filled")


def test_short_buffer_is_not_a_header() -> None:
    assert isinstance(decode_header(b"TWAL", 0), BadHeader)


@pytest.mark.parametrize(
    "field,record",
    [
        ("weight", EventRecord(1, 1, math.nan, 1)),
        ("weight", EventRecord(1, 1, math.inf, 1)),
        ("entity_id", EventRecord(2**64, 1, 1.0, 1)),
        ("signal_type", EventRecord(1, 2**16, 1.0, 1)),
    ],
)
def test_out_of_range_fields_do_not_encode_and_the_error_names_index_and_field(field: str, record: EventRecord) -> None:
    with pytest.raises(InvalidRecord) as err:
        encode_body([EventRecord(7, 1, 1.0, 7), record])
    assert (err.value.field, err.value.index) == (field, 1)


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(st.lists(event_records, min_size=1, max_size=40), min_size=1, max_size=6),
    segment_size=st.sampled_from([1, 700, 64 * 1024 * 1024]),
)
def test_wal_round_trip_of_random_batches_across_reopen(batches: list[list[EventRecord]], segment_size: int) -> None:
    """Through the real WAL (files, fsyncs, rotation): what is stored, minus what dedup
    recognised, comes back in seq order after a reopen."""
    import tempfile

    from walcore import Wal, WalConfig

    with tempfile.TemporaryDirectory() as directory:
        stored: dict[int, EventRecord] = {}
        config = WalConfig(segment_size=segment_size)
        with Wal.open(directory, config) as wal:
            for batch in batches:
                for record, result in zip(batch, wal.append_batch(batch)):
                    if not result.duplicate:
                        stored[result.seq] = record
        assert sorted(stored) == list(range(1, len(stored) + 1))
        with Wal.open(directory, config) as wal:
            assert dict(wal.replay()) == stored
