"""The ack builder: compact runs, every offset in exactly one list."""

from __future__ import annotations

import json

from consumer.acks import Outcome, build_acks


def test_contiguous_offsets_with_contiguous_seqs_form_one_run() -> None:
    outcomes = [Outcome("t", 0, o, "acked", 100 + o) for o in range(5)]
    [(key, value)] = build_acks("w1", outcomes)
    assert key == b"t:0"
    assert json.loads(value) == {"v": 1, "wal_id": "w1", "topic": "t", "partition": 0,
                                 "acked": [[0, 4, 100]], "duplicates": [], "rejected": []}


def test_runs_split_on_an_offset_gap_a_seq_jump_and_other_kinds() -> None:
    outcomes = [
        Outcome("t", 1, 10, "acked", 1), Outcome("t", 1, 11, "acked", 2),
        Outcome("t", 1, 12, "rejected", reason="weight: bad"),
        Outcome("t", 1, 13, "acked", 3),  # offset gap (12 rejected): new run
        Outcome("t", 1, 14, "acked", 9),  # seq jump (a redelivery's original seq): new run
        Outcome("t", 1, 15, "duplicate", 2),
        Outcome("t", 2, 0, "acked", 4),
    ]
    acks = {k: json.loads(v) for k, v in build_acks("w", outcomes)}
    one = acks[b"t:1"]
    assert one["acked"] == [[10, 11, 1], [13, 13, 3], [14, 14, 9]]
    assert one["rejected"] == [[12, "weight: bad"]]
    assert one["duplicates"] == [[15, 2]]
    assert acks[b"t:2"]["acked"] == [[0, 0, 4]]
    covered = [o for first, last, _ in one["acked"] for o in range(first, last + 1)]
    covered += [o for o, _ in one["duplicates"]] + [o for o, _ in one["rejected"]]
    assert sorted(covered) == list(range(10, 16))
