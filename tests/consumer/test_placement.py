"""The store's placement record, as the applier process keeps it: from the WAL's sources at
catch-up, from each BATCH's runs after, in the same atomic write as the events; and what a
group can conclude from it (consumer.protocol.placement)."""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import numpy as np

from consumer.config import Settings
from consumer.kafka.partitioning import entity_key_hashes
from consumer.protocol import placement
from consumer.protocol.placement import Homes
from consumer.store.applier import BATCH, encode_batch, fresh_runs
from consumer.store.apply_worker import Worker
from walcore import Wal
from walcore.format import CONTENT_KEY
from walcore.records import EventRecord, SourcePosition
from walcore.storage.rocks import RocksEngine
from walcore.storage.store import SignalStore

SCHEMA = Settings().signal_schema()
VIEW = SCHEMA.by_name["view"].id
PARTITIONS = 4


def home(entity: int) -> int:
    return int(entity_key_hashes(np.array([entity], np.uint64))[0]) % PARTITIONS


def keyed(entity: int, offset: int, partition: int | None = None) -> EventRecord:
    where = home(entity) if partition is None else partition
    return EventRecord(entity, VIEW, 1.0, 10**18 + offset, None, SourcePosition("signals", where, offset))


def worker_on(tmp_path: Path, records: list[EventRecord]) -> Worker:
    """A WAL holding ``records``, and an applier worker that caught up with it."""
    with Wal.open(tmp_path / "wal") as wal:
        wal.append_batch(records)
        wal_id, last_seq = wal.wal_id, wal.last_seq
    worker = Worker(
        SignalStore(RocksEngine(tmp_path / "store"), SCHEMA), tmp_path / "wal", 60.0, os.open(os.devnull, os.O_WRONLY)
    )
    worker.start(wal_id, last_seq, [])
    return worker


def held(worker: Worker) -> placement.Held | None:
    return placement.decode(worker.store.placement(), worker.store.applied_seq)


def test_catch_up_and_batches_record_each_partitions_gap_gcd_and_one_off_key_event_unplaces_it(tmp_path: Path) -> None:
    worker = worker_on(tmp_path, [keyed(e, e) for e in range(40)])
    caught_up = held(worker)
    assert caught_up is not None and set(caught_up["signals"]) == set(range(PARTITIONS))
    homes = Homes.of_answers({"me": caught_up})
    assert homes is not None and homes.of([7]) == {7: frozenset({"me"})}
    assert all(gap % PARTITIONS == 0 for gap in caught_up["signals"].values())

    # A BATCH as the service sends it: keyed events keep the record placeable...
    batch = [keyed(e, 100 + e) for e in range(40, 50)]
    worker.handle(BATCH, message(batch, first_seq=41))
    assert Homes.of_answers({"me": held(worker)}) is not None and worker.store.applied_seq == 50
    # ...one event off its key's partition does not, and the record says so durably.
    stray = keyed(3, 200, partition=(home(3) + 1) % PARTITIONS)
    worker.handle(BATCH, message([stray], first_seq=51))
    worker.flush()
    worker.store.close()
    reopened = SignalStore(RocksEngine(tmp_path / "store", read_only=True), SCHEMA)
    try:
        record = placement.decode(reopened.placement(), reopened.applied_seq)
    finally:
        reopened.close()
    assert record is not None and Homes.of_answers({"me": record}) is None


def test_a_store_that_applied_events_before_placement_was_recorded_places_nothing(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "wal") as wal:
        wal.append_batch([keyed(e, e) for e in range(1, 9)])
        wal_id, last_seq = wal.wal_id, wal.last_seq
    old = SignalStore(RocksEngine(tmp_path / "store"), SCHEMA)
    old.follow(wal_id, last_seq)
    old.apply([(seq, keyed(seq, seq)) for seq in range(1, 6)], 5)  # as an older version applied: no record
    old.close()
    worker = Worker(
        SignalStore(RocksEngine(tmp_path / "store"), SCHEMA), tmp_path / "wal", 60.0, os.open(os.devnull, os.O_WRONLY)
    )
    worker.start(wal_id, last_seq, [])
    assert worker.store.applied_seq == 8 and held(worker) is None and worker.store.placement() == b"null"


def test_the_runs_of_a_batch_with_duplicates_are_those_of_its_new_records() -> None:
    runs = [("a", 0, 3), ("a", 1, 2), ("b", 0, 4)]
    assert fresh_runs(runs, [0, 2, 3, 5, 8]) == [("a", 0, 2), ("a", 1, 1), ("b", 0, 2)]
    assert fresh_runs(runs, [3, 4]) == [("a", 1, 2)]


def message(records: list[EventRecord], first_seq: int) -> bytes:
    seqs = array("q", range(first_seq, first_seq + len(records))).tobytes()
    rows = b"".join(CONTENT_KEY.pack(*record[:4]) for record in records)
    return encode_batch(placement.runs_of(record.source for record in records), seqs, rows)


def test_a_malformed_placement_in_a_peers_answer_places_nothing() -> None:
    for garbage in (None, "x", [1], {"t": [1]}, {"t": {"a": 1}}, {"t": {"0": -4}}, {"t": {"-1": 4}}, {"t": {"0": 1.5}}):
        assert placement.as_held(garbage) is None, garbage
    assert placement.as_held({"t": {"0": 4, "3": 0}}) == {"t": {0: 4, 3: 0}}
