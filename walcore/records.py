"""The values that flow through the WAL, and the range checks they must pass.

Records are NamedTuples: cheap to build at a million a second. A record's first four
fields are its content, which (packed, walcore.format.CONTENT_KEY) is the dedup key of
an event without an ``event_id``.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import NamedTuple

from walcore.errors import InvalidRecord

U16_MAX = 2**16 - 1
U64_MAX = 2**64 - 1
I32_MAX = 2**31 - 1
I64_MAX = 2**63 - 1
MAX_EVENT_ID_BYTES = 1024
MAX_TOPIC_BYTES = 249  # Kafka's own topic-name limit


class SourcePosition(NamedTuple):
    """Where a record came from in Kafka, so a restart knows what is already stored."""

    topic: str
    partition: int
    offset: int


class EventRecord(NamedTuple):
    entity_id: int  # u64
    signal_type: int  # u16
    weight: float  # finite
    timestamp_nanos: int  # u64
    event_id: str | None = None
    source: SourcePosition | None = None


class AppendResult(NamedTuple):
    """The durable sequence number of an appended record.

    ``duplicate`` is True when the record was not written again because an equal one
    is stored: ``seq`` is then the original's. ``redelivery`` is True when the match
    was on the Kafka source position (the same offset consumed again), as opposed to
    a producer retry (same ``event_id`` or content).
    """

    seq: int
    duplicate: bool
    redelivery: bool = False


def fresh_results(first_seq: int, count: int) -> list[AppendResult]:
    """The results of ``count`` records stored as seqs ``first_seq, ...`` (none a duplicate),
    built at C speed: NamedTuple's own ``__new__`` is Python code, three times slower."""
    return list(
        map(tuple.__new__, repeat(AppendResult), zip(range(first_seq, first_seq + count), repeat(False), repeat(False)))
    )


def _check_int(field: str, value: object, low: int, high: int, index: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRecord(field, value, f"must be an integer in {low}..{high}", index)


def _finite_float(value: float) -> bool:
    """Finite as an f64: an int beyond the f64 range is not (math.isfinite raises on it)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def validate_record(record: EventRecord, index: int | None = None) -> None:
    """Raise InvalidRecord naming the first bad field of one record."""
    if (
        type(record) is EventRecord
        and type(record[0]) is int
        and type(record[1]) is int
        and type(record[3]) is int
        and type(record[2]) is float
        and record[4] is None
        and 0 <= record[0] <= U64_MAX
        and 0 <= record[1] <= U16_MAX
        and 0 <= record[3] <= U64_MAX
        and math.isfinite(record[2])
    ):
        source = record[5]
        if source is None or (
            type(source) is SourcePosition
            and type(source[0]) is str
            and 0 < len(source[0]) <= MAX_TOPIC_BYTES // 4
            and type(source[1]) is int
            and 0 <= source[1] <= I32_MAX
            and type(source[2]) is int
            and 0 <= source[2] <= I64_MAX
        ):
            return  # the common case, checked in one expression
    if not isinstance(record, EventRecord):
        raise InvalidRecord("record", record, "must be a walcore.EventRecord", index)
    _check_int("entity_id", record.entity_id, 0, U64_MAX, index)
    _check_int("signal_type", record.signal_type, 0, U16_MAX, index)
    weight = record.weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not _finite_float(weight):
        raise InvalidRecord("weight", weight, "must be a finite number", index)
    _check_int("timestamp_nanos", record.timestamp_nanos, 0, U64_MAX, index)
    event_id = record.event_id
    if event_id is not None and (
        not isinstance(event_id, str) or not event_id or len(event_id.encode()) > MAX_EVENT_ID_BYTES
    ):
        raise InvalidRecord(
            "event_id", event_id, f"must be None or a non-empty str of at most {MAX_EVENT_ID_BYTES} UTF-8 bytes", index
        )
    source = record.source
    if source is not None:
        if not isinstance(source, SourcePosition):
            raise InvalidRecord("source", source, "must be None or a walcore.SourcePosition", index)
        topic = source.topic
        if not isinstance(topic, str) or not topic or len(topic.encode()) > MAX_TOPIC_BYTES:
            raise InvalidRecord(
                "source.topic", topic, f"must be a non-empty str of at most {MAX_TOPIC_BYTES} UTF-8 bytes", index
            )
        _check_int("source.partition", source.partition, 0, I32_MAX, index)
        _check_int("source.offset", source.offset, 0, I64_MAX, index)
