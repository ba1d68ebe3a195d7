"""The batch core with literal bytes: no broker, no Java (consumer.ingest.plan is pure)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from consumer.config import Settings
from consumer.ingest.plan import acks_for, count_outcomes, plan_batch
from consumer.protocol.acks import Rejection, Stored
from consumer.protocol.dlq import REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from consumer.protocol.events import Decoder
from consumer.protocol.types import Polled
from walcore import AppendResult, EventRecord, SourcePosition

DECODER = Decoder(Settings().signal_schema(), max_message_bytes=4096)
VIEW = b'{"entity_id":42,"signal_type":"view","weight":1.5,"timestamp_nanos":1700000000000000000}'
CLICK = b'{"entity_id":7,"signal_type":"click","weight":2.0,"timestamp_nanos":1,"event_id":"e-7"}'


def test_a_poll_becomes_records_dead_letters_shares_and_offsets() -> None:
    poll = {
        ("s", 0): [
            Polled("s", 0, 10, b"k", VIEW),
            Polled("s", 0, 11, None, None, [("h", b"v")], 99),
            Polled("s", 0, 12, None, CLICK),
        ],
        ("s", 3): [Polled("s", 3, 5, None, b"{not json")],
    }
    plan = plan_batch(poll, DECODER)
    assert plan.records == [
        EventRecord(42, 1, 1.5, 1700000000000000000, None, SourcePosition("s", 0, 10)),
        EventRecord(7, 2, 2.0, 1, "e-7", SourcePosition("s", 0, 12)),
    ]
    assert plan.commit == {("s", 0): 13, ("s", 3): 6}
    assert plan.consumed == 4
    assert [(s.topic, s.partition, s.first, s.offsets) for s in plan.shares] == [("s", 0, 0, [10, 12]), ("s", 3, 2, [])]
    assert [offset for s in plan.shares for offset, _ in s.rejected] == [11, 5]


def test_a_tombstone_is_rejected_and_sent_to_the_dlq_with_its_headers_and_source() -> None:
    plan = plan_batch({("s", 1): [Polled("s", 1, 7, b"key", None, [("trace", b"abc")], 123)]}, DECODER)
    assert plan.records == []
    [letter] = plan.dead_letters
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (b"key", None)
    assert headers["trace"] == b"abc"
    assert b"tombstone" in headers[REASON]
    assert (headers[SOURCE_TOPIC], headers[SOURCE_PARTITION], headers[SOURCE_OFFSET]) == (b"s", b"1", b"7")
    [ack] = acks_for(plan, [], "w")
    assert ack.outcome(7) == Rejection(headers[REASON].decode())


def test_acks_carry_each_share_its_own_results() -> None:
    poll = {
        ("s", 0): [Polled("s", 0, 0, None, VIEW), Polled("s", 0, 1, None, CLICK)],
        ("s", 1): [Polled("s", 1, 9, None, CLICK)],
    }
    plan = plan_batch(poll, DECODER)
    results = [AppendResult(1, False), AppendResult(2, False), AppendResult(2, True)]
    first, second = acks_for(plan, results, "w")
    assert (first.key, first.outcome(0), first.outcome(1)) == (b"s:0", Stored("w", 1, False), Stored("w", 2, False))
    assert (second.key, second.outcome(9)) == (b"s:1", Stored("w", 2, True))
    assert count_outcomes(plan, results) == (3, 2, 1, 0, 0, ())


kinds = st.sampled_from(["valid", "retry", "redelivery", "tombstone", "garbage", "unknown type", "too big"])
VALUES = {
    "valid": VIEW,
    "retry": CLICK,
    "redelivery": VIEW,
    "tombstone": None,
    "garbage": b"\xff\x00",
    "unknown type": json.dumps({**json.loads(VIEW), "signal_type": "teleport"}).encode(),
    "too big": b" " * 5000 + VIEW,
}


@given(
    polls=st.dictionaries(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3)),
        st.tuples(st.integers(0, 10**9), st.lists(kinds, min_size=1, max_size=30)),
        min_size=1,
        max_size=5,
    )
)
def test_every_polled_offset_ends_in_exactly_one_of_stored_duplicate_rejected(
    polls: dict[tuple[str, int], tuple[int, list[str]]],
) -> None:
    poll = {
        tp: [Polled(tp[0], tp[1], first + i, None, VALUES[kind]) for i, kind in enumerate(batch)]
        for tp, (first, batch) in polls.items()
    }
    plan = plan_batch(poll, DECODER)
    # what the WAL would answer: a fresh seq, a retry's original, or a redelivery's original
    results = []
    for seq, record in enumerate(plan.records, 1):
        offset = record.source.offset if record.source else 0
        kind = polls[(record.source.topic, record.source.partition)][1][
            offset - polls[(record.source.topic, record.source.partition)][0]
        ]
        results.append(AppendResult(seq, kind != "valid", kind == "redelivery"))
    acks = {ack.key: ack for ack in acks_for(plan, results, "w")}
    stored = duplicates = rejected = 0
    for (topic, partition), messages in poll.items():
        ack = acks[f"{topic}:{partition}".encode()]
        assert sorted(ack.offsets()) == [m.offset for m in messages]  # every offset, exactly once
        for message in messages:
            outcome = ack.outcome(message.offset)
            if isinstance(outcome, Rejection):
                rejected += 1
            elif outcome is not None and outcome.duplicate:
                duplicates += 1
            else:
                stored += 1
        assert plan.commit[(topic, partition)] == messages[-1].offset + 1
    assert rejected == len(plan.dead_letters)  # every rejected offset has its dead letter
    assert stored + duplicates + rejected == sum(len(m) for m in poll.values()) == plan.consumed


def test_a_producers_own_tidal_headers_are_renamed_so_nobody_reads_a_spoofed_reason() -> None:
    spoofed = [("tidal.reason", b"all fine, really"), ("tidal.source.offset", b"999"), ("trace", b"t-1")]
    plan = plan_batch({("s", 0): [Polled("s", 0, 4, None, b"{not json", spoofed)]}, DECODER)
    [letter] = plan.dead_letters
    first = {}
    for name, value in letter.headers:
        first.setdefault(name, value)  # a reader taking the first match
    assert b"not valid JSON" in first[REASON] and first[SOURCE_OFFSET] == b"4"
    assert first["original.tidal.reason"] == b"all fine, really"  # kept, under another name
    assert first["trace"] == b"t-1"


def test_a_dead_letter_too_large_to_send_is_truncated_with_its_size_and_digest() -> None:
    import blake3

    from consumer.protocol.dlq import MAX_DEAD_LETTER_BYTES, ORIGINAL_BLAKE3, TRUNCATED

    huge = b"x" * 1_048_450  # a default topic takes it; no producer request can carry its copy
    plan = plan_batch({("s", 2): [Polled("s", 2, 9, b"k", huge, [("h", b"v")])]}, DECODER)
    [letter] = plan.dead_letters
    headers = dict(letter.headers)
    size = len(letter.key or b"") + len(letter.value or b"") + sum(len(n) + len(v) for n, v in letter.headers)
    assert size <= MAX_DEAD_LETTER_BYTES
    assert huge.startswith(letter.value) and len(letter.value) > 900_000
    assert headers[TRUNCATED] == b"1048450"
    assert headers[ORIGINAL_BLAKE3] == blake3.blake3(huge).hexdigest().encode()
    assert (headers[SOURCE_PARTITION], headers[SOURCE_OFFSET], headers["h"]) == (b"2", b"9", b"v")
    # even producer headers too large to carry: they go, our position and digest stay
    plan = plan_batch({("s", 2): [Polled("s", 2, 10, b"k" * 10, huge, [("big", b"h" * 1_200_000)])]}, DECODER)
    [letter] = plan.dead_letters
    assert "big" not in dict(letter.headers) and dict(letter.headers)[SOURCE_OFFSET] == b"10"


def test_a_reason_quotes_little_of_what_the_producer_sent() -> None:
    value = json.dumps({**json.loads(VIEW), "signal_type": "😀" * 1000}, ensure_ascii=False).encode()
    plan = plan_batch({("s", 0): [Polled("s", 0, 0, None, value)]}, Decoder(Settings().signal_schema(), 8192))
    [(_, reason)] = plan.shares[0].rejected
    assert "unknown signal type" in reason and "(1000 chars)" in reason and len(reason) < 300
