"""The WAL frame: pure functions from records to bytes and back (no I/O).

One frame holds one group-commit batch. Byte layout (all little-endian; the normative
description with a worked example is docs/wal-format.md)::

    header (48 bytes)
      0  u32  magic 0x4C415754 (b"TWAL")
      4  u8   format version (2; version 1 frames are still read)
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
      rows: (entity_id u64, signal_type u16, weight f64, timestamp_nanos u64)[count]
      event ids:  u16 byte length[count] (0 = none) | UTF-8 bytes, concatenated
      sources:    u16 n_topics | (u16 len | UTF-8 name)[n_topics] | u32 n_runs |
                  (u16 topic index, u32 partition, u64 first offset, u32 first record index, u32 count)[n_runs]
    digest: BLAKE3-256 over header and body (32 bytes)

A row is exactly an event's content dedup key (CONTENT_KEY): the writer packs each
record once, uses the bytes as its key, and joins them into the body, which is what
lets a Python writer reach a million durable events a second. (Version 1 stored the
same fields column by column; it cost a second packing of every record.) Variable
parts follow as sections, so the rows unpack in one C call. Sources are stored as runs
(consecutive records with consecutive offsets of one partition), which is both compact
and exactly what recovery needs to rebuild the per-partition offset index without
decoding every record.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Hashable, Sequence
from functools import lru_cache
from itertools import chain, starmap
from operator import itemgetter
from typing import NamedTuple, cast

import blake3

from walcore.errors import InvalidRecord
from walcore.records import MAX_EVENT_ID_BYTES, MAX_TOPIC_BYTES, EventRecord, SourcePosition, validate_record

MAGIC = 0x4C415754
VERSION = 2  # what this code writes
COLUMNS_VERSION = 1  # still read: the fixed fields stored column by column
FRAME_BATCH = 1
FRAME_VOID = 2  # voids earlier records (invariant 7): takes no seq, changes no frame
FRAME_SEAL = 3  # closes a full segment, naming the first seq of the next one
VOID_SEQ = struct.Struct("<Q")
HEADER = struct.Struct("<IBBHIIQQIIII")
HEADER_LEN = HEADER.size  # 48
HEADER_CRC_SPAN = HEADER_LEN - 4
DIGEST_LEN = 32
FIXED_BYTES_PER_RECORD = 26
RUN = struct.Struct("<HIQII")
NO_ID = 0


class FrameHeader(NamedTuple):
    body_len: int
    count: int  # type: ignore[assignment]  # batch: records; void: seqs voided (shadows tuple.count)
    base_seq: int  # batch: its first record's seq; void: the log's next seq when written
    batch_ts: int
    ids_len: int  # batch: event-id section; void: the reason's UTF-8 bytes
    src_len: int
    version: int = VERSION
    kind: int = FRAME_BATCH

    @property
    def frame_len(self) -> int:
        return HEADER_LEN + self.body_len + DIGEST_LEN

    @property
    def seqs_taken(self) -> int:
        """How many seqs the frame assigns (a void frame assigns none)."""
        return self.count if self.kind == FRAME_BATCH else 0

    @property
    def last_seq(self) -> int:
        return self.base_seq + self.seqs_taken - 1


class BadHeader(NamedTuple):
    """Why the bytes at an offset are not a frame header (a value, not an exception:
    the caller decides whether that is a torn tail or corruption)."""

    reason: str
    # An intact header this code cannot read (a newer format): never a torn write, so
    # never cut off; recovery stops with an error instead.
    unreadable: bool = False


class SourceRun(NamedTuple):
    """Records ``first_index .. first_index+count-1`` of a frame came from consecutive
    offsets ``first_offset ..`` of one partition."""

    topic: str
    partition: int
    first_offset: int
    first_index: int
    count: int  # type: ignore[assignment]  # shadows tuple.count, on purpose: the name the format uses


class EncodedBody(NamedTuple):
    data: bytes  # starts with the records' rows (CONTENT_KEY each, in order): ``rows``
    count: int  # type: ignore[assignment]  # shadows tuple.count, on purpose: the name the format uses
    ids_len: int
    src_len: int
    runs: list[SourceRun]
    # Each record's dedup key (event_id, else its row): the writer needs them for every batch.
    keys: Sequence[Hashable]


def rows(body: EncodedBody) -> bytes:
    """The records' rows (entity, signal type, weight, timestamp: CONTENT_KEY each)."""
    return body.data[: body.count * CONTENT_KEY.size]


# The content key of an event without an event_id, and its row in a frame: its four
# fields packed. bytes (not a tuple) because bytes caches its hash (the writer looks
# each key up several times) and is about a third of the memory of a tuple of four numbers.
CONTENT_KEY = struct.Struct("<QHdQ")


@lru_cache(maxsize=64)
def _columns(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}Q{count}Q{count}d{count}H")  # format version 1


@lru_cache(maxsize=64)
def _u16s(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}H")


class _DoesNotFit(ValueError):
    """A bulk pass found a record that does not fit; ``encode_body`` then names it."""


# Whole-batch passes are C loops over the records: ``map`` with these getters (and a
# type check through a frozenset). Unlike ``zip(*records)`` they allocate nothing per
# record that the cyclic GC tracks: zip makes an iterator per record, and 5,000
# tracked allocations per batch set off collections in the middle of append_batch.
_RECORD_TYPE = frozenset([EventRecord])
_POSITION_TYPE = frozenset([SourcePosition])
_CONTENT = itemgetter(0, 1, 2, 3)
_EVENT_ID = itemgetter(4)
_SOURCE = itemgetter(5)
_WEIGHT = itemgetter(2)
_POSITION = (itemgetter(0), itemgetter(1), itemgetter(2))


def encode_body(records: Sequence[EventRecord]) -> EncodedBody:
    """Encode a batch's body. A record that does not fit raises InvalidRecord naming
    its index in the batch and its field."""
    if not records:
        raise ValueError("a frame holds at least one record")
    try:
        return _encode_body(records)
    except (_DoesNotFit, struct.error, TypeError, ValueError, OverflowError, AttributeError, IndexError):
        raise _locate_misfit(records) from None


def _locate_misfit(records: Sequence[EventRecord]) -> InvalidRecord:
    """The bulk passes only say that *some* record does not fit. Find the first one and
    its field with the record rules (walcore.records, the one statement of them); failing
    that, the first record that does not encode on its own."""
    for index, record in enumerate(records):
        try:
            validate_record(record, index)
        except InvalidRecord as exc:
            return exc
    for index, record in enumerate(records):
        try:
            _encode_body([record])
        except (_DoesNotFit, struct.error, TypeError, ValueError, OverflowError, AttributeError, IndexError):
            return InvalidRecord("record", record, "does not fit the WAL format", index)
    return InvalidRecord("record", None, "the batch does not fit the WAL format (its section sizes)", None)


def _encode_body(records: Sequence[EventRecord]) -> EncodedBody:
    count = len(records)
    if not _RECORD_TYPE.issuperset(map(type, records)) and not all(isinstance(r, EventRecord) for r in records):
        raise _DoesNotFit("every record must be a walcore.EventRecord")
    # Packing range-checks every integer field (struct refuses what does not fit).
    rows = list(starmap(CONTENT_KEY.pack, map(_CONTENT, records)))
    fixed = b"".join(rows)
    # One C-level sum proves every weight finite: a NaN or infinity anywhere makes the
    # sum non-finite. A non-finite sum of finite values (overflow) is rechecked one by one.
    if not math.isfinite(sum(map(_WEIGHT, records))) and not all(map(math.isfinite, map(_WEIGHT, records))):
        raise _DoesNotFit("weight must be finite")
    event_ids = tuple(map(_EVENT_ID, records))
    sources = tuple(map(_SOURCE, records))
    parts = [fixed]
    ids_len = 0
    if event_ids.count(None) != count:
        encoded = [b"" if e is None else e.encode() for e in event_ids]
        lengths = [len(e) for e in encoded]
        if max(lengths) > MAX_EVENT_ID_BYTES or any(n == 0 and e is not None for n, e in zip(lengths, event_ids)):
            raise _DoesNotFit("event_id must be non-empty and fit the length limit")
        id_section = _u16s(count).pack(*lengths) + b"".join(encoded)
        parts.append(id_section)
        ids_len = len(id_section)
    # (`is None` first: comparing a SourcePosition with None is the slow way to say no.)
    runs = [] if sources[0] is None and sources.count(None) == count else source_runs(sources)
    src_len = 0
    if runs:
        src_section = _encode_sources(runs)
        parts.append(src_section)
        src_len = len(src_section)
    keys = _dedup_keys(rows, event_ids if ids_len else None)
    return EncodedBody(b"".join(parts), count, ids_len, src_len, runs, keys)


# An event id up to this many characters is its own dedup key; a longer one is keyed by a
# 128-bit BLAKE3 digest, so a key's memory does not grow with the id (a 256-emoji id was
# ~1 KB a key). A collision needs ~2**64 distinct ids in one window.
SHORT_ID_CHARS = 24
_ID_DIGEST_PREFIX = b"id:"  # 19-byte digest keys: never equal to a 26-byte row


def _id_key(event_id: str) -> Hashable:
    if len(event_id) <= SHORT_ID_CHARS:
        return event_id
    return _ID_DIGEST_PREFIX + blake3.blake3(event_id.encode()).digest(length=16)


def _dedup_keys(rows: list[bytes], event_ids: Sequence[str | None] | None) -> Sequence[Hashable]:
    """A record's dedup key: its event_id (as a str when short, else a digest of it), else
    its row, the packed content (bytes); the kinds never compare equal. The one
    definition, for writing and for recovery."""
    if event_ids is None:
        return rows
    return [row if eid is None else _id_key(eid) for row, eid in zip(rows, event_ids)]


def source_runs(sources: Sequence[SourcePosition | None]) -> list[SourceRun]:
    """Group the records' sources into maximal runs of consecutive offsets of one partition."""
    if not _POSITION_TYPE.issuperset(map(type, sources)):  # some record has no source
        return _runs_one_by_one(sources)
    present = cast("Sequence[SourcePosition]", sources)  # every one has a source (checked above)
    columns = tuple(tuple(map(field, present)) for field in _POSITION)  # topics, partitions, offsets
    runs: list[SourceRun] = []
    _split_runs(columns, 0, len(sources), runs)  # type: ignore[arg-type]
    return runs


# Below this many records a slice is grouped record by record rather than halved again.
_SPLIT_MIN = 32


def _split_runs(
    columns: tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]], lo: int, hi: int, runs: list[SourceRun]
) -> None:
    """Append the runs of records ``lo..hi-1``. A consumer's batch is a few long runs (one
    per partition polled), so test the whole slice for being one run with C-level
    comparisons and only halve it when it is not: k runs cost about k*log(n) slice
    tests instead of a Python step per record (which was a tenth of append_batch)."""
    topics, partitions, offsets = columns
    count = hi - lo
    first = offsets[lo]
    if (
        offsets[hi - 1] - first == count - 1
        and partitions[lo:hi].count(partitions[lo]) == count
        and topics[lo:hi].count(topics[lo]) == count
        and offsets[lo:hi] == tuple(range(first, first + count))
    ):
        _add_run(runs, SourceRun(topics[lo], partitions[lo], first, lo, count))
    elif count <= _SPLIT_MIN:
        for run in _runs_one_by_one(tuple(zip(topics[lo:hi], partitions[lo:hi], offsets[lo:hi]))):
            _add_run(runs, run._replace(first_index=lo + run.first_index))
    else:
        mid = (lo + hi) // 2
        _split_runs(columns, lo, mid, runs)
        _split_runs(columns, mid, hi, runs)


def _add_run(runs: list[SourceRun], run: SourceRun) -> None:
    """Append ``run``, merged into the last one when it continues it (a halving point
    may fall inside a run)."""
    if runs:
        last = runs[-1]
        if (
            last.first_index + last.count == run.first_index
            and last.first_offset + last.count == run.first_offset
            and last.partition == run.partition
            and last.topic == run.topic
        ):
            runs[-1] = last._replace(count=last.count + run.count)
            return
    runs.append(run)


def _runs_one_by_one(sources: Sequence[SourcePosition | tuple[str, int, int] | None]) -> list[SourceRun]:
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
            raise _DoesNotFit("source.topic must be non-empty and fit the length limit")
        parts.append(struct.pack("<H", len(raw)) + raw)
    parts.append(struct.pack("<I", len(runs)))
    pack = RUN.pack
    parts.extend(pack(topics[r.topic], r.partition, r.first_offset, r.first_index, r.count) for r in runs)
    return b"".join(parts)


def encode_frame(body: EncodedBody, base_seq: int, batch_ts: int) -> bytes:
    """Wrap an encoded body in a header and digest: the bytes one write() puts on disk."""
    head = HEADER.pack(
        MAGIC, VERSION, FRAME_BATCH, 0, len(body.data), body.count, base_seq, batch_ts, body.ids_len, body.src_len, 0, 0
    )
    head = head[:HEADER_CRC_SPAN] + struct.pack("<I", zlib.crc32(head[:HEADER_CRC_SPAN]))
    hasher = blake3.blake3(head)
    hasher.update(body.data)
    return b"".join((head, body.data, hasher.digest()))


def encode_void_frame(seqs: Sequence[int], reason: str, next_seq: int, batch_ts: int) -> bytes:
    """A void entry: ``seqs`` (stored earlier) are not live events any more, because
    ``reason``. Appended like a batch; the frames holding those records never change."""
    if not seqs:
        raise ValueError("a void frame voids at least one seq")
    raw_reason = reason.encode()[:MAX_EVENT_ID_BYTES]
    body = b"".join(VOID_SEQ.pack(seq) for seq in sorted(seqs)) + raw_reason
    head = HEADER.pack(
        MAGIC, VERSION, FRAME_VOID, 0, len(body), len(seqs), next_seq, batch_ts, len(raw_reason), 0, 0, 0
    )
    head = head[:HEADER_CRC_SPAN] + struct.pack("<I", zlib.crc32(head[:HEADER_CRC_SPAN]))
    return b"".join((head, body, blake3.blake3(head + body).digest()))


def encode_seal_frame(next_seq: int, batch_ts: int) -> bytes:
    """The last frame of a full segment: the log continues at ``next_seq`` in the next
    segment. A sealed last segment therefore proves that segments after it were lost."""
    body = VOID_SEQ.pack(next_seq)
    head = HEADER.pack(MAGIC, VERSION, FRAME_SEAL, 0, len(body), 1, next_seq, batch_ts, 0, 0, 0, 0)
    head = head[:HEADER_CRC_SPAN] + struct.pack("<I", zlib.crc32(head[:HEADER_CRC_SPAN]))
    return b"".join((head, body, blake3.blake3(head + body).digest()))


def decode_void(buf: bytes | memoryview, offset: int, header: FrameHeader) -> tuple[list[int], str]:
    """The seqs a (verified) void frame voids, and why."""
    body = _body(buf, offset, header)
    seqs = [seq for (seq,) in VOID_SEQ.iter_unpack(body[: VOID_SEQ.size * header.count])]
    return seqs, bytes(body[VOID_SEQ.size * header.count :]).decode(errors="replace")


def decode_header(buf: bytes | memoryview, offset: int) -> FrameHeader | BadHeader:
    """Read the header at ``offset``; a BadHeader says why those bytes are not one."""
    if len(buf) - offset < HEADER_LEN:
        return BadHeader(f"only {len(buf) - offset} bytes left, a header needs {HEADER_LEN}")
    (magic, version, ftype, _flags, body_len, count, base_seq, batch_ts, ids_len, src_len, _reserved, crc) = (
        HEADER.unpack_from(buf, offset)
    )
    if magic != MAGIC:
        return BadHeader("zero-filled" if magic == 0 and crc == 0 else f"bad magic 0x{magic:08x}")
    if zlib.crc32(buf[offset : offset + HEADER_CRC_SPAN]) != crc:
        return BadHeader("header checksum mismatch")
    if (
        version not in (VERSION, COLUMNS_VERSION)
        or ftype not in (FRAME_BATCH, FRAME_VOID, FRAME_SEAL)
        or (ftype != FRAME_BATCH and version != VERSION)
    ):
        return BadHeader(
            f"format version {version} / frame type {ftype}, which this walcore cannot read "
            f"(it reads versions {COLUMNS_VERSION} and {VERSION}): written by a newer walcore? "
            "Nothing was changed; open it with the walcore that wrote it",
            unreadable=True,
        )
    expected_len = (
        FIXED_BYTES_PER_RECORD * count + ids_len + src_len if ftype == FRAME_BATCH else VOID_SEQ.size * count + ids_len
    )
    if (
        count == 0
        or body_len != expected_len
        or (ftype != FRAME_BATCH and src_len)
        or (ftype == FRAME_SEAL and (count != 1 or ids_len))
    ):
        return BadHeader(f"inconsistent lengths (count={count}, body_len={body_len})")
    return FrameHeader(body_len, count, base_seq, batch_ts, ids_len, src_len, version, ftype)


def digest_ok(buf: bytes | memoryview, offset: int, header: FrameHeader) -> bool:
    """True when the frame at ``offset`` is complete and its BLAKE3 digest matches."""
    end_of_body = offset + HEADER_LEN + header.body_len
    if end_of_body + DIGEST_LEN > len(buf):
        return False
    expected = bytes(buf[end_of_body : end_of_body + DIGEST_LEN])
    return blake3.blake3(buf[offset:end_of_body]).digest() == expected


def _body(buf: bytes | memoryview, offset: int, header: FrameHeader) -> memoryview:
    start = offset + HEADER_LEN
    return memoryview(buf)[start : start + header.body_len]


def decode_columns(
    buf: bytes | memoryview, offset: int, header: FrameHeader
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...], tuple[int, ...]]:
    """The fixed fields, a tuple each: (entity_ids, signal_types, weights, timestamps)."""
    n = header.count
    body = _body(buf, offset, header)
    if header.version == COLUMNS_VERSION:
        values = _columns(n).unpack_from(body)
        return values[:n], values[3 * n :], values[2 * n : 3 * n], values[n : 2 * n]
    values = tuple(chain.from_iterable(CONTENT_KEY.iter_unpack(body[: FIXED_BYTES_PER_RECORD * n])))
    return values[0::4], values[1::4], values[2::4], values[3::4]


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
            ids.append(bytes(body[pos : pos + length]).decode())
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
        topics.append(bytes(body[pos + 2 : pos + 2 + length]).decode())
        pos += 2 + length
    (n_runs,) = struct.unpack_from("<I", body, pos)
    pos += 4
    return [
        SourceRun(topics[t], partition, first_offset, first_index, count)
        for t, partition, first_offset, first_index, count in RUN.iter_unpack(body[pos : pos + n_runs * RUN.size])
    ]


def decode_records(buf: bytes | memoryview, offset: int, header: FrameHeader) -> list[EventRecord]:
    """Every record of a (verified) frame, in seq order."""
    entity_ids, signal_types, weights, timestamps = decode_columns(buf, offset, header)
    event_ids = decode_event_ids(buf, offset, header)
    sources: list[SourcePosition | None] = [None] * header.count
    for run in decode_source_runs(buf, offset, header):
        for i in range(run.count):
            sources[run.first_index + i] = SourcePosition(run.topic, run.partition, run.first_offset + i)
    return list(map(EventRecord, entity_ids, signal_types, weights, timestamps, event_ids, sources))


def _rows(buf: bytes | memoryview, offset: int, header: FrameHeader) -> list[bytes]:
    """Each record's 26-byte row (its content key) of a stored batch frame."""
    if header.version == COLUMNS_VERSION:
        return list(map(CONTENT_KEY.pack, *decode_columns(buf, offset, header)))
    fixed = bytes(_body(buf, offset, header)[: FIXED_BYTES_PER_RECORD * header.count])
    return [fixed[i : i + FIXED_BYTES_PER_RECORD] for i in range(0, len(fixed), FIXED_BYTES_PER_RECORD)]


def dedup_keys(buf: bytes | memoryview, offset: int, header: FrameHeader) -> Sequence[Hashable]:
    """The dedup key of each record of a stored frame (recovery rebuilds the window)."""
    event_ids = decode_event_ids(buf, offset, header) if header.ids_len else None
    return _dedup_keys(_rows(buf, offset, header), event_ids)


def identities(buf: bytes | memoryview, offset: int, header: FrameHeader) -> list[tuple[bytes, str | None]]:
    """(row, event_id) of each record of a stored frame: what makes a Kafka redelivery the
    same message as the one stored (the writer compares them before trusting a position)."""
    return list(zip(_rows(buf, offset, header), decode_event_ids(buf, offset, header)))
