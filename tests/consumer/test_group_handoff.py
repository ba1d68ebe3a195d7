"""One true home per event across the consumer group (ARCHITECTURE invariant 7), against
the real broker with real processes: the windows a crash opens are forced with crash
points, then the partition moves to another instance after the session timeout."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from tests.support.consumer_fixtures import PARTITIONS, Topics, await_committed
from tests.support.service_helpers import (
    acks_cover,
    committed,
    consumer_options,
    dump,
    event,
    homes_of,
    metric_totals,
    produce,
    read_topic,
)
from walcore.segment import list_segments

pytestmark = pytest.mark.kafka


def config(tmp_path: Path, extra: str = "") -> list[str]:
    path = tmp_path / "consumer.toml"
    path.write_text(extra + "\n" + consumer_options(session_timeout_ms=6000, heartbeat_interval_ms=1000))
    return ["--config", str(path)]


def assert_one_home_each(topics: Topics, positions: list[tuple[int, int]], wal_dirs: list[Path]) -> None:
    messages = read_topic(topics.bootstrap, topics.reply, until=lambda m: set(positions) <= set(homes_of(m)))
    homes = homes_of(messages)
    assert {p: h for p, h in homes.items() if len(h) > 1} == {}, "an offset acked with two homes"
    live: dict[tuple[int, int], tuple[str, int]] = {}
    for wal_dir in wal_dirs:
        wal_id = (wal_dir / "WAL_ID").read_text().strip()
        for row in dump(wal_dir):
            if not row["voided"]:
                position = (row["source"]["partition"], row["source"]["offset"])
                assert position not in live, f"{position} is live in two WALs"
                live[position] = (wal_id, row["seq"])
    assert set(live) == set(positions)  # live events over all WALs = the distinct events, exactly
    for position, home in live.items():  # and each is where its acks say
        assert homes[position] == {home}


def crash_first_instance(
    topics: Topics, tmp_path: Path, crash_point: str, env: dict[str, str] | None = None
) -> list[dict]:
    """Instance A stores the first batch and SIGKILLs itself at ``crash_point``, before any
    commit; returns what its WAL holds."""
    a = topics.service(tmp_path / "wal-a", env={crash_point: "1", **(env or {})}, hooked=True, extra=config(tmp_path))
    assert a.process.wait(timeout=120) == -9, a.log()
    a.kill()
    assert all(v is None for v in committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS).values())
    rows = dump(tmp_path / "wal-a")
    assert rows
    return rows


def test_acked_but_not_committed_then_moved_is_acked_again_with_its_first_home(topics: Topics, tmp_path: Path) -> None:
    # One partition, polls of 50: A's first fetch brings all 2,000 and it stages a poll from
    # that buffer every turn, so when its first batch's acks are delivered (where it dies,
    # before the commit) a later poll is staged; the crash point waits for it to be durable:
    # stored, never acked (B stores those, and A voids its copies when it is back).
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(2000)], key=b"one")
    a_rows = crash_first_instance(
        topics, tmp_path, "TIDAL_TEST_CRASH_BEFORE_COMMIT", env={"TIDAL_MAX_POLL_RECORDS": "50"}
    )
    positions += produce(topics.bootstrap, topics.signals, [event(i) for i in range(2000, 2200)])
    b = topics.service(tmp_path / "wal-b", extra=config(tmp_path))  # takes over once A's session expires
    acks_cover(topics.bootstrap, topics.reply, positions)
    await_committed(topics, b)
    assert b.stop() == 0, b.log()
    # What A acked before it died: its first batch (A may also have stored its next poll,
    # never acked: those are B's to store, and orphans in A).
    wal_a = (tmp_path / "wal-a" / "WAL_ID").read_text().strip()
    homes = homes_of(read_topic(topics.bootstrap, topics.reply, until=lambda m: set(positions) <= set(homes_of(m))))
    acked_by_a = {position for position, found in homes.items() if any(wal == wal_a for wal, _ in found)}
    assert acked_by_a and acked_by_a <= {(r["source"]["partition"], r["source"]["offset"]) for r in a_rows}
    b_positions = {(r["source"]["partition"], r["source"]["offset"]) for r in dump(tmp_path / "wal-b")}
    assert not b_positions & acked_by_a
    assert metric_totals(b.log())["redeliveries"] == len(acked_by_a)  # B acked A's events again, as A's
    a_positions = {(r["source"]["partition"], r["source"]["offset"]) for r in a_rows}
    assert a_positions - acked_by_a  # A's never-acked copies: orphans until A is back, which voids them
    a = topics.service(tmp_path / "wal-a", extra=config(tmp_path))
    a.wait_for_log(r"voided here")
    assert a.stop() == 0, a.log()
    assert_one_home_each(topics, positions, [tmp_path / "wal-a", tmp_path / "wal-b"])


def test_stored_but_never_acked_then_moved_is_voided_when_its_wal_comes_back(topics: Topics, tmp_path: Path) -> None:
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(400)])
    stored_by_a = len(crash_first_instance(topics, tmp_path, "TIDAL_TEST_CRASH_AFTER_FSYNC"))
    b = topics.service(tmp_path / "wal-b", extra=config(tmp_path))  # stores and acks first
    acks_cover(topics.bootstrap, topics.reply, positions)
    await_committed(topics, b)
    a = topics.service(tmp_path / "wal-a", extra=config(tmp_path))  # back: finds B's acks, voids its copies
    a.wait_for_log(r"voided here")
    assert a.stop() == 0 and b.stop() == 0
    assert sum(r["voided"] for r in dump(tmp_path / "wal-a")) == stored_by_a
    assert_one_home_each(topics, positions, [tmp_path / "wal-a", tmp_path / "wal-b"])


def two_acked_rounds(topics: Topics, wal_dir: Path, extra: list[str], between: object = None) -> None:
    """300 events acked and committed, ``between()``, 300 more acked and committed."""
    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    service = topics.service(wal_dir, extra=extra)
    acks_cover(topics.bootstrap, topics.reply, first)
    assert service.stop() == 0
    if callable(between):
        between()
    second = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300, 600)])
    service = topics.service(wal_dir, extra=extra)
    acks_cover(topics.bootstrap, topics.reply, first + second)
    assert service.stop() == 0


def test_a_wal_restored_from_an_old_copy_refuses_to_run_naming_the_lost_seqs(topics: Topics, tmp_path: Path) -> None:
    """The WAL alone cannot tell (the copy is a consistent log); the group's commits can."""
    wal_dir, backup = tmp_path / "wal", tmp_path / "backup"
    two_acked_rounds(topics, wal_dir, config(tmp_path), between=lambda: shutil.copytree(wal_dir, backup))
    shutil.rmtree(wal_dir)
    shutil.copytree(backup, wal_dir)  # seqs 301..600 were acked, and are not in this copy
    service = topics.service(wal_dir, extra=config(tmp_path))
    assert service.process.wait(timeout=60) == 3, service.log()
    service.kill()
    assert "lost acknowledged events: seqs 301..600" in service.log()
    assert "Traceback" not in service.log()


def test_a_deleted_last_segment_stops_the_service_naming_what_was_lost(topics: Topics, tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    small = config(tmp_path, "[wal]\nsegment_size = 4096")
    two_acked_rounds(topics, wal_dir, small)
    segments = list_segments(wal_dir)
    assert len(segments) >= 2
    last_first_seq, last = segments[-1]
    last.unlink()  # the seal of the segment before it names it
    service = topics.service(wal_dir, extra=small)
    assert service.process.wait(timeout=60) == 3, service.log()
    service.kill()
    assert f"continuing at seq {last_first_seq}" in service.log() and "was lost" in service.log()
    assert "Traceback" not in service.log()


def test_a_recreated_topic_is_a_new_source_stored_and_acked_anew(
    topics: Topics, tmp_path: Path, kafka_admin: KafkaAdminClient
) -> None:
    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    service = topics.service(tmp_path / "wal")
    old = acks_cover(topics.bootstrap, topics.reply, first)
    assert service.stop() == 0
    kafka_admin.delete_topics([topics.signals])
    deadline = time.monotonic() + 60
    while True:  # the broker deletes asynchronously: create again once it lets us
        try:
            kafka_admin.create_topics([NewTopic(topics.signals, PARTITIONS, 1)])
            break
        except Exception:  # noqa: BLE001 - TopicAlreadyExists while the deletion completes
            assert time.monotonic() < deadline
            time.sleep(0.2)
    second = produce(topics.bootstrap, topics.signals, [event(1000 + i) for i in range(300)])
    assert set(second) & set(first), "the new topic reuses the old offsets"
    service = topics.service(tmp_path / "wal")
    reply = read_topic(topics.bootstrap, topics.reply, until=lambda m: len(m) >= 1 and _covers(m, second, old))
    assert service.stop() == 0
    rows = dump(tmp_path / "wal")
    assert [r["seq"] for r in rows] == list(range(1, 601))  # all 300 new events stored
    assert sorted(r["entity_id"] for r in rows[300:]) == list(range(1000, 1300))
    assert "new source" in service.log()
    del reply


def _covers(messages: list, positions: list[tuple[int, int]], old: dict) -> bool:
    """Acks for ``positions`` newer than the ``old`` ones (seqs above 300)."""
    newest: dict[tuple[int, int], int] = {}
    for message in messages:
        value = json.loads(message.value)
        for first, last, seq in value["acked"]:
            for offset in range(first, last + 1):
                newest[(value["partition"], offset)] = seq + offset - first
    return all(newest.get(p, 0) > 300 for p in positions)


def test_an_acked_duplicate_redelivered_after_the_window_keeps_its_first_home(topics: Topics, tmp_path: Path) -> None:
    """A producer retry is acked as a duplicate (stored nowhere). If its offset is consumed
    again after the dedup window forgot the original (a crash before the commit, a restart
    later), the WAL alone would store it as new: the handoff repeats its first home."""
    original = event(1, event_id="order-1")
    retry = {**original, "weight": 2.0}  # same event id: a duplicate of the first
    positions = produce(topics.bootstrap, topics.signals, [original, event(2), retry], key=b"one")
    short_window = config(tmp_path, "[wal]\ndedup_window = 0.5")
    crashed = topics.service(
        tmp_path / "wal", env={"TIDAL_TEST_CRASH_BEFORE_COMMIT": "1"}, hooked=True, extra=short_window
    )
    assert crashed.process.wait(timeout=120) == -9, crashed.log()
    crashed.kill()
    first = acks_cover(topics.bootstrap, topics.reply, positions)
    assert first[positions[2]] == ("duplicate", first[positions[0]][1])
    time.sleep(1.5)  # the dedup window (0.5 s, at most twice that) forgets the original
    service = topics.service(tmp_path / "wal", extra=short_window)  # the same WAL: consumes all three again
    await_committed(topics, service)
    assert service.stop() == 0, service.log()
    assert len(dump(tmp_path / "wal")) == 2  # the retry was never stored
    assert_one_home_each_offset(topics, positions)


def assert_one_home_each_offset(topics: Topics, positions: list[tuple[int, int]]) -> None:
    messages = read_topic(topics.bootstrap, topics.reply, until=lambda m: set(positions) <= set(homes_of(m)))
    homes = homes_of(messages)
    assert {p: h for p, h in homes.items() if len(h) > 1} == {}, "an offset acked with two homes"
