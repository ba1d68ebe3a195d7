"""The store stage end to end (real broker, real processes): the service applies every
durable event into the signal store exactly once, through crashes between the WAL's
fsync and the store's write and between the store's write and its flush/checkpoint;
`tidal-consumer query` answers from it; and the WAL stops growing (retention)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal as signals
import subprocess
import time
from pathlib import Path

import pytest

from consumer.config import Settings
from consumer.protocol.placement import Homes
from tests.support.consumer_fixtures import PARTITIONS, Topics
from tests.support.service_helpers import TIDAL, acks_cover, applied_counts, dump, event, placement_of, produce
from walcore.checkpoint import read_checkpoint
from walcore.storage.signals import lambda_per_ns

pytestmark = pytest.mark.kafka

ENTITIES = 40


def events(first: int, count: int) -> list[dict]:
    return [event(i, entity_id=i % ENTITIES) for i in range(first, first + count)]


def expected_counts(sent: list[dict]) -> dict[tuple[int, int], int]:
    ids = Settings().signal_schema().ids
    counts: dict[tuple[int, int], int] = {}
    for value in sent:
        key = (value["entity_id"], ids[value["signal_type"]])
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.backends("kafka-python")  # the store stage, fed by the WAL whatever the Kafka client
def test_every_event_is_applied_once_and_query_answers_from_the_store(topics: Topics, tmp_path: Path) -> None:
    sent = events(0, 600)
    positions = produce(topics.bootstrap, topics.signals, sent)
    service = topics.service(tmp_path / "wal")
    acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    assert applied_counts(tmp_path / "wal" / "store") == expected_counts(sent)

    at = max(value["timestamp_nanos"] for value in sent)
    result = subprocess.run(
        [TIDAL, "query", "--entity", "7", "--at", str(at), "--json", "--wal-dir", str(tmp_path / "wal")],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    definitions = Settings().signal_schema().by_name
    for name, signal in found["signals"].items():
        mine = [v for v in sent if v["entity_id"] == 7 and v["signal_type"] == name]
        lam = lambda_per_ns(definitions[name].half_life_seconds)
        assert signal["count"] == len(mine)
        assert signal["score"] == pytest.approx(
            math.fsum(v["weight"] * math.exp(-lam * (at - v["timestamp_nanos"])) for v in mine), rel=1e-9
        )
        assert set(signal["windows"].values()) == {len(mine)}  # all within every window of `at`
    assert set(found["signals"]) == {v["signal_type"] for v in sent if v["entity_id"] == 7}
    text = subprocess.run(
        [TIDAL, "query", "--entity", "7", "--wal-dir", str(tmp_path / "wal")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert text.startswith("entity 7 (store applied through seq 600)")


@pytest.mark.backends("confluent")  # the store stage, fed by the WAL whatever the Kafka client
def test_events_at_the_ends_of_the_u64_range_are_applied_and_queried_from_a_private_store(
    topics: Topics, tmp_path: Path
) -> None:
    """The contract's timestamps and entity ids are u64s. A timestamp of 2**64 - 1 once
    failed the applier's score encoding (a signed field), and the catch-up after each
    restart met the same event again: one message stopped the store stage."""
    top = 2**64 - 1
    sent = [
        event(0, entity_id=top, signal_type="view", timestamp_nanos=top),
        event(1, entity_id=top, signal_type="view", timestamp_nanos=0),
        event(2, entity_id=0, timestamp_nanos=0),
    ]
    positions = produce(topics.bootstrap, topics.signals, sent)
    # The store outside the WAL directory (its 0700 does not shield it there), under umask 022.
    config = tmp_path / "consumer.toml"
    config.write_text(f'[store]\ndir = "{tmp_path / "elsewhere"}"\n')
    old_umask = os.umask(0o022)
    try:
        service = topics.service(tmp_path / "wal", extra=["--config", str(config)])
    finally:
        os.umask(old_umask)
    acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    assert applied_counts(tmp_path / "elsewhere") == expected_counts(sent)
    modes = {entry.name: entry.stat().st_mode & 0o777 for entry in os.scandir(tmp_path / "elsewhere")}
    assert (tmp_path / "elsewhere").stat().st_mode & 0o777 == 0o700
    assert modes and all(mode & 0o077 == 0 for mode in modes.values()), modes  # as the WAL's files
    found = json.loads(
        subprocess.run(
            [
                TIDAL,
                "query",
                "--entity",
                str(top),
                "--at",
                str(top),
                "--json",
                "--wal-dir",
                str(tmp_path / "wal"),
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    view = found["signals"]["view"]
    # The event at the top counts whole; the one at 0 has decayed to nothing, and lies
    # outside every window.
    assert view["count"] == 2 and view["score"] == pytest.approx(sent[0]["weight"], rel=1e-12)
    assert set(view["windows"].values()) == {1}


@pytest.mark.backends("kafka-python")  # the store stage, fed by the WAL whatever the Kafka client
def test_a_crash_after_the_fsync_before_the_store_saw_the_batch_applies_it_once(topics: Topics, tmp_path: Path) -> None:
    """SIGKILL right after a batch's fsync (before its acks; the store had not seen it)."""
    sent = events(0, 1000)
    positions = produce(topics.bootstrap, topics.signals, sent)
    small = {"TIDAL_MAX_POLL_RECORDS": "100"}
    crashing = topics.service(tmp_path / "wal", hooked=True, env={**small, "TIDAL_TEST_CRASH_AFTER_FSYNC": "3"})
    assert crashing.process.wait(timeout=120) == -9, crashing.log()
    crashing.kill()
    service = topics.service(tmp_path / "wal", env=small)
    acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    assert applied_counts(tmp_path / "wal" / "store") == expected_counts(sent)
    # Keyed by index, not entity: the store's placement record (batches, and the replay of
    # the batch it missed) shows events off their keys' partitions, so it places nothing.
    held = placement_of(tmp_path / "wal" / "store")
    assert held is not None and set(held) == {topics.signals} and set(held[topics.signals]) == set(range(PARTITIONS))
    assert Homes.of_answers({"store": held}) is None


@pytest.mark.backends("confluent")  # the store stage, fed by the WAL whatever the Kafka client
def test_a_crash_after_the_store_write_before_its_flush_and_checkpoint_applies_nothing_twice(
    topics: Topics, tmp_path: Path
) -> None:
    """Everything applied in the store, nothing of it flushed or checkpointed in the WAL yet
    (a 30 s flush interval); SIGKILL; the restart replays the WAL from the checkpoint."""
    sent = events(0, 1000)
    positions = produce(topics.bootstrap, topics.signals, sent)
    env = {"TIDAL_MAX_POLL_RECORDS": "100", "TIDAL_STORE__FLUSH_INTERVAL_S": "30"}
    service = topics.service(tmp_path / "wal", env=env)
    acks_cover(topics.bootstrap, topics.reply, positions)
    deadline = time.monotonic() + 60
    while sum(applied_counts(tmp_path / "wal" / "store").values()) < len(sent):  # the worker applies behind the acks
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.1)
    service.kill()  # the applier process dies with it
    assert read_checkpoint(tmp_path / "wal") == 0  # the WAL was never told: it replays every event
    service = topics.service(tmp_path / "wal", env=env)
    service.wait_for_log("partitions assigned: \\S")
    assert service.stop() == 0, service.log()
    assert applied_counts(tmp_path / "wal" / "store") == expected_counts(sent)
    assert read_checkpoint(tmp_path / "wal") == len(sent)  # checkpointed at the stop


@pytest.mark.backends("kafka-python")  # the store stage, fed by the WAL whatever the Kafka client
def test_the_wal_stops_growing_once_the_store_holds_its_events(topics: Topics, tmp_path: Path) -> None:
    env = {
        "TIDAL_WAL__SEGMENT_SIZE": "65536",
        "TIDAL_STORE__RETAIN_WAL_BYTES": "0",
        "TIDAL_STORE__FLUSH_INTERVAL_S": "0.2",
        "TIDAL_MAX_POLL_RECORDS": "500",
    }
    service = topics.service(tmp_path / "wal", env=env)
    sent: list[dict] = []
    wal_bytes = []
    for _wave in range(6):
        batch = events(len(sent), 5000)
        positions = produce(topics.bootstrap, topics.signals, batch)
        sent += batch
        acks_cover(topics.bootstrap, topics.reply, positions)
        service.wait_for_more("events/s=", 2)  # two progress lines: a flush and checkpoint since
        wal_bytes.append(sum(p.stat().st_size for p in (tmp_path / "wal").glob("*.wal")))
    assert service.stop() == 0, service.log()
    written = sum(len(json.dumps(v)) for v in sent)  # the WAL would hold about this much without retention
    assert max(wal_bytes) < 4 * 65536 < written / 4, (wal_bytes, written)
    assert applied_counts(tmp_path / "wal" / "store") == expected_counts(sent)


@pytest.mark.backends("confluent")  # the store stage, fed by the WAL whatever the Kafka client
@pytest.mark.parametrize("case", ["another WAL's store", "a store ahead of its WAL"])
def test_a_store_that_does_not_match_its_wal_stops_the_service_with_exit_8(
    topics: Topics, tmp_path: Path, case: str
) -> None:
    """A store copied beside another WAL, or a WAL restored from an old copy under a newer
    store: applying would mix logs or skip events. One line, exit 8, nothing consumed."""
    first = produce(topics.bootstrap, topics.signals, events(0, 200))
    service = topics.service(tmp_path / "wal-a")
    acks_cover(topics.bootstrap, topics.reply, first)
    assert service.stop() == 0, service.log()
    if case == "another WAL's store":
        other = topics.service(tmp_path / "wal-b", extra=["--group-id", f"{topics.group}-b"])
        other.wait_for_log("partitions assigned: \\S")
        assert other.stop() == 0, other.log()
        shutil.rmtree(tmp_path / "wal-b" / "store")
        shutil.copytree(tmp_path / "wal-a" / "store", tmp_path / "wal-b" / "store")
        wal = tmp_path / "wal-b"
        said = "the store follows WAL"
    else:
        shutil.copytree(tmp_path / "wal-a", tmp_path / "old", ignore=shutil.ignore_patterns("store"))
        second = produce(topics.bootstrap, topics.signals, events(200, 100))
        service = topics.service(tmp_path / "wal-a")
        acks_cover(topics.bootstrap, topics.reply, second)
        assert service.stop() == 0, service.log()  # the store holds all 300 at the stop
        for segment in (tmp_path / "wal-a").glob("*.wal"):
            segment.unlink()
        for item in (tmp_path / "old").iterdir():
            shutil.copy2(item, tmp_path / "wal-a" / item.name)
        wal = tmp_path / "wal-a"
        said = "the WAL lost events the store holds"
    stopped = topics.service(wal, extra=["--group-id", f"{topics.group}-c"])
    assert stopped.process.wait(timeout=60) == 8, stopped.log()
    stopped.kill()
    assert said in stopped.log() and "Traceback" not in stopped.log()


@pytest.mark.backends("kafka-python")  # the applier's process, whatever the Kafka client
@pytest.mark.parametrize("signum", [signals.SIGTERM, signals.SIGINT])
def test_a_signal_to_the_whole_process_group_drains_and_exits_0(
    topics: Topics, tmp_path: Path, signum: signals.Signals
) -> None:
    """systemd's default KillMode, `timeout` and Ctrl-C signal every process of the group:
    the applier must not die first (it used to: exit 8, the drain lost), and SIGINT is no
    traceback. Two rounds on one WAL, events flowing in between."""
    sent: list[dict] = []
    for round_ in range(2):
        batch = events(round_ * 200, 200)
        sent += batch
        positions = produce(topics.bootstrap, topics.signals, batch)
        service = topics.service(tmp_path / "wal", own_group=True)
        acks_cover(topics.bootstrap, topics.reply, positions)
        os.killpg(service.process.pid, signum)
        assert service.process.wait(timeout=60) == 0, service.log()
        service.kill()
        assert "Traceback" not in service.log() and "applier exited" not in service.log()
    assert applied_counts(tmp_path / "wal" / "store") == expected_counts(sent)


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])  # field 19


@pytest.mark.backends("confluent")  # the store stage, fed by the WAL whatever the Kafka client
def test_the_applier_runs_ten_nice_levels_below_the_service_and_its_death_is_one_line(
    topics: Topics, tmp_path: Path
) -> None:
    """Ingest comes first on shared cores (docs/operations.md): the applier process the
    service starts is reniced, the service itself is not."""
    service = topics.service(tmp_path / "wal")
    service.wait_for_log("consuming")  # logged once the store's applier has caught up
    pid = service.process.pid
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    worker = b"consumer.store.apply_worker"
    workers = [child for child in children if worker in Path(f"/proc/{child}/cmdline").read_bytes()]
    assert len(workers) == 1, children
    assert _nice(workers[0]) == _nice(pid) + 10
    # Killed under it: exit 8 with one line saying so (not twice, and not pointing at a
    # line above that a killed process never wrote).
    os.kill(workers[0], signals.SIGKILL)
    assert service.process.wait(timeout=60) == 8, service.log()
    service.kill()
    lines = [line for line in service.log().splitlines() if "the store's applier" in line]
    assert len(lines) == 1 and "was killed by SIGKILL" in lines[0] and "CRITICAL" in lines[0], lines
    assert "Traceback" not in service.log()


def _signals_toml(view_half_life: float) -> str:
    tables = []
    for signal in Settings().signals:
        half_life = view_half_life if signal.name == "view" else signal.half_life_seconds
        tables.append(
            f'[[signals]]\nname = "{signal.name}"\nid = {signal.id}\nhalf_life_seconds = {half_life}\n'
            f"windows_seconds = {list(signal.windows_seconds)}\nvelocity = {str(signal.velocity).lower()}\n"
        )
    return "\n".join(tables)


@pytest.mark.backends("kafka-python")
def test_a_schema_that_contradicts_the_store_is_refused_and_a_store_missing_seqs_is_a_warning(
    topics: Topics, tmp_path: Path
) -> None:
    wal_dir = tmp_path / "wal"
    small = "[wal]\nsegment_size = 1\n[store]\nretain_wal_bytes = 0\nflush_interval_s = 0.05\n"
    same, other = tmp_path / "same.toml", tmp_path / "other.toml"
    same.write_text(small + _signals_toml(3600.0))
    other.write_text(small + _signals_toml(7200.0))  # view's half-life doubled: every view score differs
    positions = produce(topics.bootstrap, topics.signals, events(0, 300))
    service = topics.service(wal_dir, env={"TIDAL_MAX_POLL_RECORDS": "50"}, extra=["--config", str(same)])
    acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    first_kept = dump(wal_dir)[0]["seq"]
    assert first_kept > 1  # retention deleted the applied, committed segments

    query = subprocess.run(
        [TIDAL, "query", "--entity", "7", "--wal-dir", str(wal_dir), "--config", str(other)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert query.returncode == 8 and len(query.stderr.strip().splitlines()) == 1, query.stderr
    assert "id 1 was 'view' with a half-life of 3600 s, now 'view' with 7200 s" in query.stderr
    refused = topics.service(wal_dir, extra=["--config", str(other)])
    assert refused.process.wait(timeout=60) == 8, refused.log()
    refused.kill()
    assert "now 'view' with 7200 s" in refused.log() and "Traceback" not in refused.log()

    shutil.rmtree(wal_dir / "store")  # rebuilt from what the WAL still holds
    rebuilt = topics.service(wal_dir, extra=["--config", str(same)])
    rebuilt.wait_for_log("consuming")
    assert rebuilt.stop() == 0, rebuilt.log()
    assert f"WARNING consumer.store.apply_worker: the WAL no longer holds seqs 1..{first_kept - 1}" in rebuilt.log()
