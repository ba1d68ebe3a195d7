"""The WAL frame: pure functions from records to bytes and back (no I/O).

One frame holds one group-commit batch. Byte layout (all little-endian; the normative
description with a worked example is docs/wal-format.md)::

    header (48 bytes)
      0  u32  magic 0x4C415754 (b"TWAL")
      4  u8   format version (1)
      5  u8   frame type (1 = batch)
      6  u16  flags (0; reserved)
      8  u32  body_len
     12  u32  count (records in the batch, >= 1)
     16  u64  base_seq (seq of the first record; the rest follow, gap-free)
     24  u64  batch timestamp, ns since the Unix epoch
     32  u32  ids_len (bytes of the event-id section, 0 when no record has one)
     36  u32  src_len (bytes of the source section, 0 when no record has one)
     40  u32  reserved (0)
     44  u32  CRC-32 of bytes 0..43: a torn or garbage length is never trusted
    body (body_len bytes) = 26 * count + ids_len + src_len
      entity_id u64[count] | timestamp_nanos u64[count] | weight f64[count] | signal_type u16[count]
      event ids:  u16 byte length[count] (0 = none) | UTF-8 bytes, concatenated
      sources:    u16 n_topics | (u16 len | UTF-8 name)[n_topics] | u32 n_runs |
                  (u16 topic index, u32 partition, u64 first offset, u32 first record index, u32 count)[n_runs]
    digest: BLAKE3-256 over header and body (32 bytes)

The body is columnar rather than a list of length-prefixed rows: a whole column packs
and unpacks in one C call, which is what lets a Python writer reach a million durable
events a second. Sources are stored as runs (consecutive records with consecutive
offsets of one partition), which is both compact and exactly what recovery needs to
rebuild the per-partition offset index without decoding every record.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import NamedTuple

import blake3

from walcore.records import MAX_EVENT_ID_BYTES, MAX_TOPIC_BYTES, EventRecord, SourcePosition

MAGIC = 0x4C415754
VERSION = 1
FRAME_BATCH = 1
HEADER = struct.Struct("<IBBHIIQQIIII")
HEADER_LEN = HEADER.size  # 48
HEADER_CRC_SPAN = HEADER_LEN - 4
DIGEST_LEN = 32
FIXED_BYTES_PER_RECORD = 26
RUN = struct.Struct("<HIQII")
NO_ID = 0


class FrameHeader(NamedTuple):
    body_len: int
    count: int
    base_seq: int
    batch_ts: int
    ids_len: int
    src_len: int

    @property
    def frame_len(self) -> int:
        return HEADER_LEN + self.body_len + DIGEST_LEN

    @property
    def last_seq(self) -> int:
        return self.base_seq + self.count - 1


class BadHeader(NamedTuple):
    """Why the bytes at an offset are not a frame header (a value, not an exception:
    the caller decides whether that is a torn tail or corruption)."""

    reason: str


class SourceRun(NamedTuple):
    """Records ``first_index .. first_index+count-1`` of a frame came from consecutive
    offsets ``first_offset ..`` of one partition."""

    topic: str
    partition: int
    first_offset: int
    first_index: int
    count: int


class EncodedBody(NamedTuple):
    data: bytes
    count: int
    ids_len: int
    src_len: int
    runs: list[SourceRun]
    # Each record's dedup key (event_id, else the packed content): computed here because
    # the columns are at hand, and the writer needs them for every batch.
    keys: list[Hashable]


@lru_cache(maxsize=64)
def _columns(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}Q{count}Q{count}d{count}H")


@lru_cache(maxsize=64)
def _u16s(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}H")


class EncodeError(ValueError):
    """A record does not fit the format; walcore.records.validate_record names the field."""


def encode_body(records: Sequence[EventRecord]) -> EncodedBody:
    """Encode a batch's body. Raises EncodeError (or struct.error/TypeError from the
    packers) for any record that does not fit; the caller then finds the exact field."""
    count = len(records)
    if count == 0:
        raise EncodeError("a frame holds at least one record")
    # One C-level transpose gives every column; each column then packs in one call.
    entity_ids, signal_types, weights, timestamps, event_ids, sources = zip(*records)
    # One C-level sum proves every weight finite: a NaN or infinity anywhere makes the
    # sum non-finite. A non-finite sum of finite values (overflow) is rechecked one by one.
    if not math.isfinite(sum(weights)) and not all(map(math.isfinite, weights)):
        raise EncodeError("weight must be finite")
    parts = [_columns(count).pack(*entity_ids, *timestamps, *weights, *signal_types)]
    ids_len = 0
    if event_ids.count(None) != count:
        encoded = [b"" if e is None else e.encode() for e in event_ids]
        lengths = [len(e) for e in encoded]
        if max(lengths) > MAX_EVENT_ID_BYTES or any(
            n == 0 and e is not None for n, e in zip(lengths, event_ids)
        ):
            raise EncodeError("event_id must be non-empty and fit the length limit")
        id_section = _u16s(count).pack(*lengths) + b"".join(encoded)
        parts.append(id_section)
        ids_len = len(id_section)
    runs = source_runs(sources) if sources.count(None) != count else []
    src_len = 0
    if runs:
        src_section = _encode_sources(runs)
        parts.append(src_section)
        src_len = len(src_section)
    keys = _dedup_keys(entity_ids, signal_types, weights, timestamps, event_ids if ids_len else None)
    return EncodedBody(b"".join(parts), count, ids_len, src_len, runs, keys)


# The content key of an event without an event_id: its four fields packed. bytes (not
# a tuple) because bytes caches its hash (the writer looks each key up several times)
# and is about a third of the memory of a tuple of four numbers.
CONTENT_KEY = struct.Struct("<QHdQ")


def _dedup_keys(entity_ids: Sequence[int], signal_types: Sequence[int], weights: Sequence[float],
                timestamps: Sequence[int], event_ids: Sequence[str | None] | None) -> list[Hashable]:
    """A record's dedup key: its event_id (str), else its packed content (bytes); the two
    kinds never compare equal. The one definition, for writing and for recovery."""
    contents = map(CONTENT_KEY.pack, entity_ids, signal_types, weights, timestamps)
    if event_ids is None:
        return list(contents)
    return [content if eid is None else eid for content, eid in zip(contents, event_ids)]


def source_runs(sources: Sequence[SourcePosition | None]) -> list[SourceRun]:
    """Group the records' sources into runs of consecutive offsets of one partition."""
    runs: list[SourceRun] = []
    topic = partition = None
    first_offset = first_index = run_len = 0
    next_offset = -1
    for index, source in enumerate(sources):
        if source is None:
            if run_len:
                runs.append(SourceRun(topic, partition, first_offset, first_index, run_len))  # type: ignore[arg-type]
                run_len = 0
            continue
        s_topic, s_partition, s_offset = source
        if run_len and s_offset == next_offset and s_partition == partition and s_topic == topic:
            run_len += 1
        else:
            if run_len:
                runs.append(SourceRun(topic, partition, first_offset, first_index, run_len))  # type: ignore[arg-type]
            topic, partition, first_offset, first_index, run_len = s_topic, s_partition, s_offset, index, 1
        next_offset = s_offset + 1
    if run_len:
        runs.append(SourceRun(topic, partition, first_offset, first_index, run_len))  # type: ignore[arg-type]
    return runs


def _encode_sources(runs: list[SourceRun]) -> bytes:
    topics: dict[str, int] = {}
    for run in runs:
        topics.setdefault(run.topic, len(topics))
    parts = [struct.pack("<H", len(topics))]
    for name in topics:
        raw = name.encode()
        if not raw or len(raw) > MAX_TOPIC_BYTES:
            raise EncodeError("source.topic must be non-empty and fit the length limit")
        parts.append(struct.pack("<H", len(raw)) + raw)
    parts.append(struct.pack("<I", len(runs)))
    pack = RUN.pack
    parts.extend(pack(topics[r.topic], r.partition, r.first_offset, r.first_index, r.count) for r in runs)
    return b"".join(parts)


def encode_frame(body: EncodedBody, base_seq: int, batch_ts: int) -> bytes:
    """Wrap an encoded body in a header and digest: the bytes one write() puts on disk."""
    head = HEADER.pack(MAGIC, VERSION, FRAME_BATCH, 0, len(body.data), body.count, base_seq,
                       batch_ts, body.ids_len, body.src_len, 0, 0)
    head = head[:HEADER_CRC_SPAN] + struct.pack("<I", zlib.crc32(head[:HEADER_CRC_SPAN]))
    hasher = blake3.blake3(head)
    hasher.update(body.data)
    return b"".join((head, body.data, hasher.digest()))


def decode_header(buf: bytes | memoryview, offset: int) -> FrameHeader | BadHeader:
    """Read the header at ``offset``; a BadHeader says why those bytes are not one."""
    if len(buf) - offset < HEADER_LEN:
        return BadHeader(f"only {len(buf) - offset} bytes left, a header needs {HEADER_LEN}")
    (magic, version, ftype, _flags, body_len, count, base_seq, batch_ts, ids_len, src_len,
     _reserved, crc) = HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        return BadHeader("zero-filled" if magic == 0 and crc == 0 else f"bad magic 0x{magic:08x}")
    if zlib.crc32(buf[offset:offset + HEADER_CRC_SPAN]) != crc:
        return BadHeader("header checksum mismatch")
    if version != VERSION or ftype != FRAME_BATCH:
        return BadHeader(f"unsupported format version {version} / frame type {ftype}")
    if count == 0 or body_len != FIXED_BYTES_PER_RECORD * count + ids_len + src_len:
        return BadHeader(f"inconsistent lengths (count={count}, body_len={body_len})")
    return FrameHeader(body_len, count, base_seq, batch_ts, ids_len, src_len)


def digest_ok(buf: bytes | memoryview, offset: int, header: FrameHeader) -> bool:
    """True when the frame at ``offset`` is complete and its BLAKE3 digest matches."""
    end_of_body = offset + HEADER_LEN + header.body_len
    if end_of_body + DIGEST_LEN > len(buf):
        return False
    expected = bytes(buf[end_of_body:end_of_body + DIGEST_LEN])
    return blake3.blake3(buf[offset:end_of_body]).digest() == expected


def _body(buf: bytes | memoryview, offset: int, header: FrameHeader) -> memoryview:
    start = offset + HEADER_LEN
    return memoryview(buf)[start:start + header.body_len]


def decode_columns(buf: bytes | memoryview, offset: int, header: FrameHeader) -> tuple[
        tuple[int, ...], tuple[int, ...], tuple[float, ...], tuple[int, ...]]:
    """The fixed columns: (entity_ids, timestamps, weights, signal_types)."""
    n = header.count
    values = _columns(n).unpack_from(_body(buf, offset, header))
    return values[:n], values[n:2 * n], values[2 * n:3 * n], values[3 * n:]


def decode_event_ids(buf: bytes | memoryview, offset: int, header: FrameHeader) -> list[str | None]:
    n = header.count
    if header.ids_len == 0:
        return [None] * n
    body = _body(buf, offset, header)
    start = FIXED_BYTES_PER_RECORD * n
    lengths = _u16s(n).unpack_from(body, start)
    pos = start + 2 * n
    ids: list[str | None] = []
    for length in lengths:
        if length == NO_ID:
            ids.append(None)
        else:
            ids.append(bytes(body[pos:pos + length]).decode())
            pos += length
    return ids


def decode_source_runs(buf: bytes | memoryview, offset: int, header: FrameHeader) -> list[SourceRun]:
    if header.src_len == 0:
        return []
    body = _body(buf, offset, header)
    pos = FIXED_BYTES_PER_RECORD * header.count + header.ids_len
    (n_topics,) = struct.unpack_from("<H", body, pos)
    pos += 2
    topics = []
    for _ in range(n_topics):
        (length,) = struct.unpack_from("<H", body, pos)
        topics.append(bytes(body[pos + 2:pos + 2 + length]).decode())
        pos += 2 + length
    (n_runs,) = struct.unpack_from("<I", body, pos)
    pos += 4
    return [
        SourceRun(topics[t], partition, first_offset, first_index, count)
        for t, partition, first_offset, first_index, count in RUN.iter_unpack(
            body[pos:pos + n_runs * RUN.size])
    ]


def decode_records(buf: bytes | memoryview, offset: int, header: FrameHeader) -> list[EventRecord]:
    """Every record of a (verified) frame, in seq order."""
    entity_ids, timestamps, weights, signal_types = decode_columns(buf, offset, header)
    event_ids = decode_event_ids(buf, offset, header)
    sources: list[SourcePosition | None] = [None] * header.count
    for run in decode_source_runs(buf, offset, header):
        for i in range(run.count):
            sources[run.first_index + i] = SourcePosition(run.topic, run.partition, run.first_offset + i)
    return list(map(EventRecord, entity_ids, signal_types, weights, timestamps, event_ids, sources))


def dedup_keys(buf: bytes | memoryview, offset: int, header: FrameHeader) -> list[Hashable]:
    """The dedup key of each record of a stored frame (recovery rebuilds the window)."""
    entity_ids, timestamps, weights, signal_types = decode_columns(buf, offset, header)
    event_ids = decode_event_ids(buf, offset, header) if header.ids_len else None
    return _dedup_keys(entity_ids, signal_types, weights, timestamps, event_ids)
