"""A paused instance that wakes after losing its partitions (docs/acks.md, limit (b)), with
real processes: instance A SIGSTOPs itself right after a batch is durable, before its acks
and commit; B takes the partitions once A's session expires, stores and acks everything;
then A gets SIGCONT. With delivery = "transactional" the broker fences A's transaction
(KIP-447): none of A's acks becomes visible, A exits 10 with one line, and when it is
back its copies are voided. With the standard delivery the same pause gives an offset two
homes: the limit this mode keeps, shown rather than claimed."""

from __future__ import annotations

import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tests.support.consumer_fixtures import Topics, await_committed
from tests.support.service_helpers import (
    Service,
    acks_cover,
    consumer_options,
    dump,
    event,
    homes_of,
    produce,
    read_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.backends("confluent")]  # kafka-python's transactions do not fence


def config(tmp_path: Path, delivery: str) -> list[str]:
    path = tmp_path / f"{delivery}.toml"
    path.write_text(
        f'delivery = "{delivery}"\n' + consumer_options(session_timeout_ms=6000, heartbeat_interval_ms=1000)
    )
    return ["--config", str(path)]


def await_paused(service: Service, timeout: float = 60.0) -> None:
    """Until the process is stopped (state T), as its hook leaves it."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{service.process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert service.process.poll() is None, service.log()
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.05)


def paused_while_b_takes_over(
    topics: Topics, tmp_path: Path, delivery: str
) -> tuple[Service, Service, list[tuple[int, int]], set[tuple[int, int]]]:
    """A holds its first batch, durable and unacked, paused; B stores and acks every event
    and commits. Returns A, B, every position, and the positions A's WAL holds."""
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(400)])
    a = topics.service(
        tmp_path / "wal-a",
        env={"TIDAL_TEST_PAUSE_AFTER_FSYNC": "1", "TIDAL_MAX_POLL_RECORDS": "100"},
        hooked=True,
        extra=config(tmp_path, delivery),
    )
    await_paused(a)
    held = {(r["source"]["partition"], r["source"]["offset"]) for r in dump(tmp_path / "wal-a")}
    assert held
    b = topics.service(tmp_path / "wal-b", extra=config(tmp_path, delivery))  # joins once A's session expires
    acks_cover(topics.bootstrap, topics.reply, positions)
    await_committed(topics, b)
    return a, b, positions, held


def wal_id(wal_dir: Path) -> str:
    return (wal_dir / "WAL_ID").read_text().strip()


class Value(NamedTuple):
    value: bytes | None


def read_whole(bootstrap: str, topic: str, *, committed_only: bool, timeout: float = 60.0) -> list[Value]:
    """Every message of every partition of ``topic``, to its end (the EOF events), as a
    reader of committed messages only sees them or as one that also sees aborted ones."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fencing-reader-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    partitions = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values: list[Value] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"{topic}: no end after {timeout} s"
            for message in reader.consume(1000, 0.2):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                elif error is None:
                    values.append(Value(message.value()))
    finally:
        reader.close()
    return values


def test_a_paused_instance_publishes_no_ack_with_transactional_delivery(topics: Topics, tmp_path: Path) -> None:
    a, b, positions, held = paused_while_b_takes_over(topics, tmp_path, "transactional")
    a.process.send_signal(signal.SIGCONT)
    assert a.process.wait(timeout=60) == 10, a.log()
    refused = [line for line in a.log().splitlines() if "transaction refused" in line]
    assert len(refused) == 1 and "Traceback" not in a.log(), a.log()

    a_wal, b_wal = wal_id(tmp_path / "wal-a"), wal_id(tmp_path / "wal-b")
    # A did publish its batch's acks (a reader of uncommitted messages sees them) ...
    sent = homes_of(read_whole(topics.bootstrap, topics.reply, committed_only=False))
    a_sent = {p for p, homes in sent.items() if any(wal == a_wal for wal, _ in homes)}
    stored_by_a = {(r["source"]["partition"], r["source"]["offset"]) for r in dump(tmp_path / "wal-a")}
    # its paused batch, and maybe the next one it completed before its commit was refused
    assert a_sent and held <= stored_by_a and a_sent <= stored_by_a
    # ... in a transaction the broker fenced: committed, every offset has one home, B's.
    visible = homes_of(read_whole(topics.bootstrap, topics.reply, committed_only=True))
    assert {p: {wal for wal, _ in homes} for p, homes in visible.items()} == {p: {b_wal} for p in positions}

    a = topics.service(tmp_path / "wal-a", extra=config(tmp_path, "transactional"))  # back: voids its copies
    a.wait_for_log(r"voided here")
    assert a.stop() == 0, a.log()
    assert b.stop() == 0, b.log()
    assert all(r["voided"] for r in dump(tmp_path / "wal-a"))  # B acked every event before A was back
    live = [(r["source"]["partition"], r["source"]["offset"]) for r in dump(tmp_path / "wal-b") if not r["voided"]]
    assert sorted(live) == sorted(positions)  # every event stored once, in B


def test_the_same_pause_with_standard_delivery_gives_an_offset_two_homes(topics: Topics, tmp_path: Path) -> None:
    """Today's limit (docs/acks.md (b)), kept honest: A wakes, publishes its batch's acks
    (non-transactional: visible at once), its commit is refused, and it carries on."""
    a, b, positions, held = paused_while_b_takes_over(topics, tmp_path, "standard")
    a.process.send_signal(signal.SIGCONT)
    a_wal = wal_id(tmp_path / "wal-a")

    def a_acked(messages: list) -> bool:
        return held <= {p for p, homes in homes_of(messages).items() if any(wal == a_wal for wal, _ in homes)}

    homes = homes_of(read_topic(topics.bootstrap, topics.reply, until=a_acked))
    b_wal = wal_id(tmp_path / "wal-b")
    assert all(b_wal in {wal for wal, _ in homes[p]} for p in positions)  # B acked every event
    two_homes = {p for p, found in homes.items() if len(found) == 2}
    assert a.stop() == 0, a.log()
    assert b.stop() == 0, b.log()
    # A's paused batch has A's home too, and so may what A stored from its fetched buffer
    # before it noticed the rebalance: every offset of A's WAL, and only those.
    assert held <= two_homes <= {(r["source"]["partition"], r["source"]["offset"]) for r in dump(tmp_path / "wal-a")}


def committed_homes(topics: Topics, positions: list[tuple[int, int]], timeout: float = 90.0) -> dict:
    """The homes a reader of committed acks sees, once they cover ``positions``."""
    deadline = time.monotonic() + timeout
    while True:
        homes = homes_of(read_whole(topics.bootstrap, topics.reply, committed_only=True))
        if set(positions) <= set(homes):
            return homes
        assert time.monotonic() < deadline, f"{len(set(positions) - set(homes))} positions without a committed ack"
        time.sleep(0.2)


def test_a_kill_with_a_transaction_open_shows_none_of_it_and_the_restart_acks_each_event_once(
    topics: Topics, tmp_path: Path
) -> None:
    """SIGKILL once the first batch's acks are delivered into its transaction, before the
    commit: a reader of committed acks sees none of them; the restart on the WAL fences
    the dead producer (its transaction is aborted), recognises the batch as redelivered
    and acks it again, with its original seqs, in a transaction that commits."""
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(1000)])
    wal_dir = tmp_path / "wal"
    crashing = topics.service(
        wal_dir, env={"TIDAL_TEST_CRASH_BEFORE_COMMIT": "1"}, hooked=True, extra=config(tmp_path, "transactional")
    )
    assert crashing.process.wait(timeout=120) == -9, crashing.log()
    crashing.kill()
    stored_before = {(r["source"]["partition"], r["source"]["offset"]): r["seq"] for r in dump(wal_dir)}
    sent = homes_of(read_whole(topics.bootstrap, topics.reply, committed_only=False))
    assert sent and set(sent) <= set(stored_before)  # acks delivered into the open transaction ...
    assert homes_of(read_whole(topics.bootstrap, topics.reply, committed_only=True)) == {}  # ... none visible

    service = topics.service(wal_dir, extra=config(tmp_path, "transactional"))
    homes = committed_homes(topics, positions)
    assert service.stop() == 0, service.log()
    rows = dump(wal_dir)
    assert [r["seq"] for r in rows] == list(range(1, 1001))  # nothing stored twice
    here = wal_id(wal_dir)
    assert homes == {(r["source"]["partition"], r["source"]["offset"]): {(here, r["seq"])} for r in rows}
    assert all(homes[p] == {(here, seq)} for p, seq in stored_before.items())  # the original seqs


def test_a_copy_of_a_running_wal_started_elsewhere_stops_the_first_with_one_line(
    topics: Topics, tmp_path: Path
) -> None:
    """Two processes on one WAL id (a copied WAL directory, which the WAL's lock cannot
    see) would hand one (wal_id, seq) to two events. The copy joins as the same static
    member (and, transactional, with the same producer id), which fences the first: it
    exits 2, the WAL being in use elsewhere, with one line saying so; not 5, which a
    supervisor would restart into fencing the copy in turn. (Either delivery: the consumer's
    fence comes first; the standard one is run.)"""
    delivery = "standard"
    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(200)])
    a = topics.service(tmp_path / "wal-a", extra=config(tmp_path, delivery))
    acks_cover(topics.bootstrap, topics.reply, first)
    shutil.copytree(tmp_path / "wal-a", tmp_path / "wal-copy", ignore=shutil.ignore_patterns("LOCK", "store"))
    copy = topics.service(tmp_path / "wal-copy", extra=config(tmp_path, delivery))
    assert a.process.wait(timeout=90) == 2, a.log()
    line = [entry for entry in a.log().splitlines() if "another process" in entry]
    assert len(line) == 1 and "Traceback" not in a.log(), a.log()
    assert copy.stop() == 0, copy.log()
