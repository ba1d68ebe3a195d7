"""The ack builder: compact runs, every offset in exactly one list."""

from __future__ import annotations

import json

from consumer.acks import build_ack
from walcore import AppendResult


def test_contiguous_offsets_with_contiguous_seqs_form_one_run() -> None:
    results = [AppendResult(100 + o, False) for o in range(5)]
    key, value = build_ack("w1", "t", 0, [0, 1, 2, 3, 4], results, rejected=[])
    assert key == b"t:0"
    assert json.loads(value) == {"v": 1, "wal_id": "w1", "topic": "t", "partition": 0,
                                 "acked": [[0, 4, 100]], "duplicates": [], "rejected": []}


def test_runs_split_on_an_offset_gap_a_seq_jump_and_other_kinds() -> None:
    offsets = [10, 11, 13, 14, 15]
    results = [AppendResult(1, False), AppendResult(2, False),
               AppendResult(3, False),  # offset gap (12 was rejected): new run
               AppendResult(9, True, True),  # a redelivery: acked with its original seq, a new run
               AppendResult(2, True)]  # a producer retry of seq 2
    ack = json.loads(build_ack("w", "t", 1, offsets, results, rejected=[(12, "weight: bad")])[1])
    assert ack["acked"] == [[10, 11, 1], [13, 13, 3], [14, 14, 9]]
    assert ack["rejected"] == [[12, "weight: bad"]]
    assert ack["duplicates"] == [[15, 2]]
    covered = [o for first, last, _ in ack["acked"] for o in range(first, last + 1)]
    covered += [o for o, _ in ack["duplicates"]] + [o for o, _ in ack["rejected"]]
    assert sorted(covered) == list(range(10, 16))


def test_contiguous_redeliveries_stay_one_run_with_original_seqs() -> None:
    ack = json.loads(build_ack("w", "t", 0, [5, 6, 7], [AppendResult(s, True, True) for s in (40, 41, 42)],
                               rejected=[])[1])
    assert ack["acked"] == [[5, 7, 40]] and ack["duplicates"] == []


def test_a_partition_whose_records_were_all_rejected_still_gets_an_ack() -> None:
    ack = json.loads(build_ack("w", "t", 2, [], [], rejected=[(0, "value: empty"), (1, "value: empty")])[1])
    assert ack["acked"] == [] and ack["rejected"] == [[0, "value: empty"], [1, "value: empty"]]
