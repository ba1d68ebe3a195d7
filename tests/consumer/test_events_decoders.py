"""The fast decoder (msgspec) never accepts what the pydantic model refuses, and accepts
the same record: the hostile corpus, then generated messages near every rule's edge, go
through Decoder.decode and through pydantic alone, and must come out the same."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consumer.config import Settings
from consumer.protocol.events import Decoder, Rejected, SignalEvent
from walcore import EventRecord

DECODER = Decoder(Settings().signal_schema(), max_message_bytes=1_000_000)
IDS = Settings().signal_schema().ids

HOSTILE: list[bytes] = [
    b"",
    b"\xff\xfe\x00\x01 not utf-8",
    b"{" * 3000,
    b'{"entity_id": 1}',
    b"[1, 2, 3]",
    b"null",
    b"1",
    b'"x"',
    b'{"entity_id":1,"signal_type":"view","weight":NaN,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":Infinity,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1e400,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":-1e400,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1e-400,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1.7e308,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":-1e15,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1000000000000001,"timestamp_nanos":1}',
    b'{"entity_id":18446744073709551615,"signal_type":"view","weight":1,"timestamp_nanos":18446744073709551615}',
    b'{"entity_id":18446744073709551616,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":-1,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":-1}',
    b'{"entity_id":1.0,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1e2,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":"1","signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":true,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":true,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":"1","timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":null,"weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"event_id":""}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"event_id":null}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"event_id":7}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"event_id":"' + b"e" * 256 + b'"}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"event_id":"' + b"e" * 257 + b'"}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"event_id":"' + "é".encode() * 256 + b'"}',
    b'{"entity_id":1,"entity_id":2,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"extra":{"deep":[1,2,{"x":null}]}}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1} trailing',
    b' \n{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1}\n ',
    b'\xef\xbb\xbf{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"v\\ud800","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"vi\\u0065w","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view\xff","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":1,"timestamp_nanos":1,"event_id":"\xed\xa0\x80"}',
    b'{"entity_id":01,"signal_type":"view","weight":1,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":.5,"timestamp_nanos":1}',
    b'{"entity_id":1,"signal_type":"view","weight":-0.0,"timestamp_nanos":-0}',
    b"{'entity_id':1}",
]


def test_a_weight_beyond_the_documented_bound_is_rejected_naming_the_field() -> None:
    def event(weight: str) -> bytes:
        return b'{"entity_id":1,"signal_type":"view","weight":' + weight.encode() + b',"timestamp_nanos":1}'

    for refused in ("1.7e308", "-1.7e308", "1000000000000000.2", "-1000000000000001"):
        result = DECODER.decode(event(refused), "t", 0, 0)
        assert isinstance(result, Rejected) and result.reason.startswith("weight: Input should be"), result
        assert "1e+15" in result.reason or "1000000000000000" in result.reason, result
    for kept in ("1e15", "-1e15", "0.5"):
        assert not isinstance(DECODER.decode(event(kept), "t", 0, 0), Rejected)


def pydantic_decision(value: bytes) -> EventRecord | None:
    """What the pydantic model alone decides: the record, or None (refused)."""
    try:
        event = SignalEvent.model_validate_json(value)
    except ValidationError:
        return None
    signal_id = IDS.get(event.signal_type)
    if signal_id is None:
        return None
    return EventRecord(event.entity_id, signal_id, event.weight, event.timestamp_nanos, event.event_id)


def decision(value: bytes) -> EventRecord | None:
    result = DECODER.decode(value, "t", 0, 0)
    if isinstance(result, Rejected):
        return None
    assert result.source == ("t", 0, 0)
    return result._replace(source=None)


def same(a: EventRecord | None, b: EventRecord | None) -> bool:
    """Equal decisions and records (a weight of -0.0 is not 0.0 here: the WAL stores its bits)."""
    if a is None or b is None:
        return a is b
    return a == b and math.copysign(1, a.weight) == math.copysign(1, b.weight)


def test_the_hostile_corpus_gets_the_same_decisions_from_both_decoders() -> None:
    accepted = 0
    for value in HOSTILE:
        fast, slow = decision(value), pydantic_decision(value)
        assert same(fast, slow), (value[:120], fast, slow)
        accepted += fast is not None
    assert 0 < accepted < len(HOSTILE)  # the corpus holds both kinds


_NUMBERS = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=True),
    st.sampled_from([0, -0.0, 1e308, 2**64 - 1, 2**64, 2**63, -(2**63) - 1, 1e15, -1e15, 1e15 + 1]),
)
_STRINGS = st.one_of(st.text(max_size=300), st.sampled_from(["", "view", "click", "x" * 256, "x" * 257]))
_VALUES = st.one_of(st.none(), st.booleans(), _NUMBERS, _STRINGS, st.lists(st.integers(), max_size=3))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    fields: dict[str, Any] = {
        "entity_id": draw(st.one_of(st.integers(0, 2**64 - 1), _VALUES)),
        "signal_type": draw(st.one_of(st.sampled_from(sorted(IDS)), _VALUES)),
        "weight": draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), _VALUES)),
        "timestamp_nanos": draw(st.one_of(st.integers(0, 2**64 - 1), _VALUES)),
    }
    if draw(st.booleans()):
        fields["event_id"] = draw(st.one_of(st.text(min_size=1, max_size=260), _VALUES))
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2)):
        fields.pop(name, None)
    text = json.dumps(fields, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=3000, deadline=None)
@given(messages())
def test_generated_messages_get_the_same_decisions_from_both_decoders(value: bytes) -> None:
    assert same(decision(value), pydantic_decision(value)), value[:200]
