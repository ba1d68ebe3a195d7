"""The ack protocol, with literal bytes: built compactly, read back exactly, and anything
that is not an ack is a value (NotAnAck), never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.protocol.acks import Ack, NotAnAck, Rejection, Stored, build_ack, parse_ack
from walcore import AppendResult


def test_contiguous_offsets_with_contiguous_seqs_form_one_run_in_the_documented_bytes() -> None:
    results = [AppendResult(100 + o, False) for o in range(5)]
    ack = build_ack("w1", "t", 0, [0, 1, 2, 3, 4], results, rejected=[])
    assert ack.key == b"t:0"
    assert ack.encode() == (
        b'{"v":1,"wal_id":"w1","topic":"t","partition":0,"acked":[[0,4,100]],"duplicates":[],"rejected":[]}'
    )


def test_runs_split_on_an_offset_gap_a_seq_jump_and_other_kinds() -> None:
    offsets = [10, 11, 13, 14, 15]
    results = [
        AppendResult(1, False),
        AppendResult(2, False),
        AppendResult(3, False),  # offset gap (12 was rejected): new run
        AppendResult(9, True, True),  # a redelivery: acked with its original seq, a new run
        AppendResult(2, True),
    ]  # a producer retry of seq 2
    ack = build_ack("w", "t", 1, offsets, results, rejected=[(12, "weight: bad")])
    assert ack.acked == [(10, 11, 1), (13, 13, 3), (14, 14, 9)]
    assert ack.rejected == [(12, "weight: bad")]
    assert ack.duplicates == [(15, 2)]
    assert sorted(ack.offsets()) == list(range(10, 16))
    assert ack.outcome(11) == Stored("w", 2, False)
    assert ack.outcome(14) == Stored("w", 9, False)  # a redelivery is an ack, with the original seq
    assert ack.outcome(15) == Stored("w", 2, True)
    assert ack.outcome(12) == Rejection("weight: bad")
    assert ack.outcome(16) is None


def test_contiguous_redeliveries_stay_one_run_with_original_seqs() -> None:
    ack = build_ack("w", "t", 0, [5, 6, 7], [AppendResult(s, True, True) for s in (40, 41, 42)], rejected=[])
    assert ack.acked == [(5, 7, 40)] and ack.duplicates == []


def test_a_partition_whose_records_were_all_rejected_still_gets_an_ack() -> None:
    ack = build_ack("w", "t", 2, [], [], rejected=[(0, "value: empty"), (1, "value: empty")])
    assert ack.acked == [] and ack.rejected == [(0, "value: empty"), (1, "value: empty")]


def test_parse_reads_back_what_encode_wrote_including_non_ascii_reasons() -> None:
    ack = build_ack("w", "sig", 3, [7], [AppendResult(1, False)], rejected=[(8, "signal_type: 'ü😀'")])
    assert parse_ack(ack.encode()) == ack


GOOD = {
    "v": 1,
    "wal_id": "w",
    "topic": "t",
    "partition": 0,
    "acked": [[0, 1, 5]],
    "duplicates": [[2, 5]],
    "rejected": [[3, "bad"]],
}


@pytest.mark.parametrize(
    "value,where",
    [
        (json.dumps({**GOOD, "acked": "no"}).encode(), "acked"),
        (json.dumps({**GOOD, "acked": [[0, 1]]}).encode(), "acked"),
        (json.dumps({**GOOD, "acked": [[3, 1, 5]]}).encode(), "first offset is after its last"),
        (json.dumps({**GOOD, "acked": [[0, 1, 0]]}).encode(), "acked"),  # seqs start at 1
        (json.dumps({**GOOD, "partition": True}).encode(), "partition"),
        (json.dumps({**GOOD, "partition": "0"}).encode(), "partition"),
        (json.dumps({**GOOD, "duplicates": [[2, 5.0]]}).encode(), "duplicates"),
        (json.dumps({**GOOD, "rejected": [[3, 7]]}).encode(), "rejected"),
        (json.dumps({**GOOD, "v": 2}).encode(), "v"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "wal_id"}).encode(), "wal_id"),
        (b"[1, 2, 3]", "value"),
        (b"\xff\xfe not json", "JSON"),
        (None, "empty"),
    ],
)
def test_anything_not_shaped_like_an_ack_is_a_not_an_ack_value(value: bytes | None, where: str) -> None:
    result = parse_ack(value)
    assert isinstance(result, NotAnAck)
    assert where in result.reason


outcomes = st.lists(
    st.tuples(st.sampled_from(["stored", "retry", "redelivery", "rejected"]), st.integers(1, 10**6)), max_size=60
)


@given(first_offset=st.integers(0, 2**40), kinds=outcomes)
def test_every_offset_of_a_share_comes_back_with_exactly_its_outcome(
    first_offset: int, kinds: list[tuple[str, int]]
) -> None:
    offsets: list[int] = []
    results: list[AppendResult] = []
    rejected: list[tuple[int, str]] = []
    expected: dict[int, Stored | Rejection] = {}
    for i, (kind, seq) in enumerate(kinds):
        offset = first_offset + i
        if kind == "rejected":
            rejected.append((offset, f"reason {i}"))
            expected[offset] = Rejection(f"reason {i}")
            continue
        offsets.append(offset)
        results.append(AppendResult(seq, kind != "stored", kind == "redelivery"))
        expected[offset] = Stored("w", seq, kind == "retry")
    ack = parse_ack(build_ack("w", "t", 0, offsets, results, rejected=rejected).encode())
    assert isinstance(ack, Ack)
    assert sorted(ack.offsets()) == sorted(expected)  # each offset exactly once
    assert {offset: ack.outcome(offset) for offset in expected} == expected


@given(kinds=outcomes, max_bytes=st.integers(200, 3000))
def test_an_ack_too_large_splits_into_parts_that_fit_and_cover_each_offset_once(
    kinds: list[tuple[str, int]], max_bytes: int
) -> None:
    from consumer.protocol.acks import fit

    offsets, results, rejected = [], [], []
    for i, (kind, seq) in enumerate(kinds):
        if kind == "rejected":
            rejected.append((i, f"signal_type: unknown signal type {'x' * 40!r} #{i}"))
        else:
            offsets.append(i)
            results.append(AppendResult(seq, kind != "stored", kind == "redelivery"))
    ack = build_ack("w", "t", 0, offsets, results, rejected=rejected)
    parts = list(fit(ack, max_bytes))
    assert all(len(value) <= max_bytes or len(list(part.offsets())) == 1 for part, value in parts)
    covered = [offset for part, _ in parts for offset in part.offsets()]
    assert sorted(covered) == sorted(ack.offsets()) and len(covered) == len(set(covered))
    assert all(part.outcome(o) == ack.outcome(o) for part, _ in parts for o in part.offsets())
    assert [value for _, value in parts] == [part.encode() for part, _ in parts]
