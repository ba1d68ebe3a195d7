"""The wire format of a signal event (docs/events.md) and its decoding.

A Kafka message value is a JSON object::

    {"entity_id": 42, "signal_type": "view", "weight": 1.0,
     "timestamp_nanos": 1700000000000000000, "event_id": "optional, <= 256 chars"}

Types are strict (no "42" for 42, no 1.0 for an integer); unknown fields are ignored so
producers may add metadata. Decoding never raises: a bad message becomes a Rejected
value with a reason, which the ingest steps send to the DLQ.

Two decoders, one decision: msgspec reads every message (about 4x faster than pydantic
here, benchmarks/e2e_bench.py); whatever it refuses goes to the pydantic model, which
makes the final decision and words the reason. So a message is accepted only if pydantic
accepts it too: tests/consumer/test_events_decoders.py runs the hostile corpus and
generated messages through both and requires identical decisions and records.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from walcore.records import U64_MAX, EventRecord, SourcePosition
from walcore.schema import MAX_ABS_WEIGHT, Schema

MAX_EVENT_ID_CHARS = 256


class SignalEvent(BaseModel):
    """One event as producers send it. Also what ``DurableProducer.send`` accepts."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    entity_id: Annotated[int, Field(ge=0, le=U64_MAX)]
    signal_type: Annotated[str, Field(min_length=1)]
    weight: Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_WEIGHT, le=MAX_ABS_WEIGHT)]
    timestamp_nanos: Annotated[int, Field(ge=0, le=U64_MAX)]
    event_id: Annotated[str | None, Field(min_length=1, max_length=MAX_EVENT_ID_CHARS)] = None


# The Rust validator itself: model_validate_json adds a Python call per message.
_validate_json = SignalEvent.__pydantic_validator__.validate_json


class _FastEvent(msgspec.Struct):
    """SignalEvent for msgspec (strict by default). msgspec cannot bound an integer beyond
    int64, so the u64 ranges are checked after decoding."""

    entity_id: int
    signal_type: Annotated[str, msgspec.Meta(min_length=1)]
    # JSON has no NaN/Infinity, and msgspec refuses a number that overflows.
    weight: Annotated[float, msgspec.Meta(ge=-MAX_ABS_WEIGHT, le=MAX_ABS_WEIGHT)]
    timestamp_nanos: int
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_CHARS)] | None = None


_fast_decode = msgspec.json.Decoder(_FastEvent).decode
_FAST_REFUSED = (msgspec.DecodeError, msgspec.ValidationError)
_new = tuple.__new__  # NamedTuples built at C speed (their own __new__ is Python code)


class Rejected(NamedTuple):
    reason: str


# A reason quotes at most this much of what the producer sent: reasons travel in acks and
# DLQ headers, and 300 rejects quoting a 4 KB value each once made a 3 MB ack no broker took.
MAX_QUOTED_CHARS = 64


def _clip(text: str) -> str:
    return text if len(text) <= MAX_QUOTED_CHARS else f"{text[:MAX_QUOTED_CHARS]}... ({len(text)} chars)"


def describe(error: ValidationError) -> str:
    """A one-line reason naming the field, e.g. ``weight: Input should be a finite number``."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "value"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{field}: {first['msg']}{more}"


class Decoder:
    """Bytes from Kafka to a WAL record (with its source position) or a Rejected."""

    def __init__(self, schema: Schema, max_message_bytes: int) -> None:
        self._ids = schema.ids
        self._known = ", ".join(sorted(schema.ids))
        self._max = max_message_bytes

    def decode(self, value: bytes | None, topic: str, partition: int, offset: int) -> EventRecord | Rejected:
        if value is None:
            return Rejected("value: empty (a tombstone) is not a signal event")
        if len(value) > self._max:
            return Rejected(f"value: {len(value)} bytes, over the {self._max}-byte limit")
        try:
            event: _FastEvent | SignalEvent = _fast_decode(value)
            if not (0 <= event.entity_id <= U64_MAX and 0 <= event.timestamp_nanos <= U64_MAX):
                raise ValueError("out of the u64 range")
        except (*_FAST_REFUSED, ValueError):
            try:  # pydantic decides (and says why)
                event = _validate_json(value)
            except ValidationError as exc:
                if exc.errors()[0]["type"] == "json_invalid":
                    return Rejected(f"value: not valid JSON ({exc.errors()[0]['msg']})")
                return Rejected(describe(exc))
        signal_id = self._ids.get(event.signal_type)
        if signal_id is None:
            return Rejected(f"signal_type: unknown signal type {_clip(event.signal_type)!r} (known: {self._known})")
        return _new(
            EventRecord,
            (
                event.entity_id,
                signal_id,
                event.weight,
                event.timestamp_nanos,
                event.event_id,
                _new(SourcePosition, (topic, partition, offset)),
            ),
        )
