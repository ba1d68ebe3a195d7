"""What the handoff believes on the reply topic (docs/acks.md, what is believed): pure
functions, literal inputs. The hostile cases are the ones a forged or stray message makes."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from consumer.protocol.acks import MAX_ACK_OFFSETS, Ack, NotAnAck, Stored, parse_ack
from consumer.protocol.handoff import (
    NO_ACK,
    CommitMark,
    HomeRun,
    Homes,
    Reading,
    decode_mark,
    encode_mark,
    first_homes,
    registration,
)


def ack(wal: str, acked: list[list[int]], duplicates: list[list[int]] | None = None, partition: int = 0) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "wal_id": wal,
            "topic": "t",
            "partition": partition,
            "acked": acked,
            "duplicates": duplicates or [],
            "rejected": [],
        }
    ).encode()


def read(
    values: list[bytes],
    *,
    end: int | None = 1000,
    trusted: frozenset[str] = frozenset({"a", "b"}),
    own: tuple[str, int] = ("me", 50),
    from_offset: int = 0,
) -> Reading:
    return first_homes(values, "t", 0, from_offset, end=end, trusted=trusted, own=own)


def test_an_ack_from_a_wal_no_commit_names_is_not_believed() -> None:
    reading = read([ack("f0f0f0f0f0f0f0f0", [[100, 109, 5000]]), ack("a", [[100, 104, 7]])])
    assert reading.homes.get(100) == Stored("a", 7, False)  # the forged first ack does not take the offset
    assert reading.homes.get(105) is None
    [distrusted] = reading.distrusted
    assert "names WAL f0f0f0f0f0f0f0f0, which no commit" in distrusted.reason and distrusted.kind == "unknown_wal"


def test_an_ack_for_offsets_at_or_past_the_end_is_not_believed_even_from_a_known_wal() -> None:
    reading = read([ack("a", [[995, 1000, 1]]), ack("a", [[990, 999, 20]])], end=1000)
    assert reading.homes.get(995) == Stored("a", 25, False)
    assert "offset 1000, at or past the partition's end (1000)" in reading.distrusted[0].reason
    unbounded = read([ack("a", [[995, 1000, 1]])], end=None)  # a topic no longer consumed: no end known
    assert unbounded.homes.get(1000) == Stored("a", 6, False)


def test_an_ack_naming_this_wal_past_its_last_seq_is_reported_not_believed() -> None:
    reading = read([ack("me", [[10, 19, 10**9]]), ack("me", [[20, 20, 50]]), ack("me", [[21, 21, 51]])])
    assert reading.homes.get(10) is None and reading.homes.get(20) == Stored("me", 50, False)
    assert [d.kind for d in reading.distrusted] == ["own_seq", "own_seq"]
    assert "names this WAL's seq 1000000009, past its last seq 50" in reading.distrusted[0].reason
    duplicate = read([ack("me", [], duplicates=[[30, 51]])])
    assert duplicate.homes.get(30) is None and duplicate.distrusted[0].kind == "own_seq"


def test_this_wal_is_believed_before_any_commit_names_it_and_other_partitions_are_skipped() -> None:
    reading = read([ack("me", [[0, 4, 1]]), ack("x", [[5, 9, 1]], partition=1)], trusted=frozenset())
    assert reading.homes.get(4) == Stored("me", 5, False) and reading.homes.get(5) is None
    assert reading.distrusted == []


def test_a_huge_run_is_not_an_ack_and_costs_nothing_to_read() -> None:
    huge = ack("a", [[0, 10**12, 1]])
    assert isinstance(parse_ack(huge), NotAnAck) and "more than one batch holds" in parse_ack(huge).reason
    split = ack("a", [[0, MAX_ACK_OFFSETS // 2, 1], [MAX_ACK_OFFSETS, MAX_ACK_OFFSETS + MAX_ACK_OFFSETS // 2, 1]])
    assert isinstance(parse_ack(split), NotAnAck)  # the bound is on the whole message, not each run
    assert isinstance(parse_ack(ack("a", [[0, MAX_ACK_OFFSETS - 1, 1]])), Ack)
    assert not read([huge], end=None).homes


def test_a_registration_names_the_wal_keeps_the_ack_position_and_claims_no_seq() -> None:
    assert registration(None, "me") == CommitMark("me", 0, 0, NO_ACK, frozenset({"me"}))
    earlier = CommitMark("a", 40, 2, 17, frozenset({"a", "b"}))
    assert registration(earlier, "me") == CommitMark("me", 0, 2, 17, frozenset({"a", "b", "me"}))
    assert registration(earlier, "b") is None  # named already: no commit needed
    fresh = registration(None, "me")
    assert fresh is not None and decode_mark(encode_mark(fresh)) == fresh  # NO_ACK survives the metadata
    assert decode_mark('{"v":1,"wal":"x","seq":0,"ack":[0,-2],"wals":["x"]}') is None


def naive_first(runs: list[HomeRun]) -> dict[int, Stored]:
    homes: dict[int, Stored] = {}
    for run in runs:
        for offset in range(run.first, run.last + 1):
            homes.setdefault(offset, Stored(run.wal_id, run.seq + offset - run.first, run.duplicate))
    return homes


@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12), st.sampled_from("abc"), st.integers(1, 99)), max_size=25)
)
def test_runs_keep_the_first_home_of_every_offset_as_a_dict_would(specs: list[tuple[int, int, str, int]]) -> None:
    runs = [HomeRun(first, first + length, wal, seq, length == 0 and seq % 2 == 0) for first, length, wal, seq in specs]
    homes = Homes()
    for run in runs:
        homes.add(run)
    expected = naive_first(runs)
    assert {offset: homes.get(offset) for offset in range(-1, 80) if homes.get(offset)} == expected
    kept = list(homes)
    assert all(a.last < b.first for a, b in itertools.pairwise(kept))  # disjoint, in order
