"""Fault injection in the service, against the real broker: a failing disk (fsync EIO)
and an undeliverable ack are fatal with their documented exit codes (checked as
literal numbers on the real process); a lost async commit is made good by the drain."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaConnectionError

from consumer.config import load_settings
from consumer.errors import KafkaUnavailable
from consumer.service import Service
from tests.support.consumer_fixtures import PARTITIONS, Topics
from tests.support.service_helpers import acks_cover, committed, dump, end_offsets, event, metric_totals, produce

pytestmark = pytest.mark.kafka


def test_fsync_eio_exits_3_publishes_no_ack_commits_nothing_and_a_restart_recovers(
    topics: Topics, tmp_path: Path
) -> None:
    produce(topics.bootstrap, topics.signals, [event(i) for i in range(200)])
    failing = topics.service(tmp_path / "wal", env={"TIDAL_TEST_FSYNC_EIO": "1"}, hooked=True)
    assert failing.process.wait(timeout=120) == 3, failing.log()
    failing.kill()
    log = failing.log()
    assert log.count("injected EIO on fdatasync") == 1  # the failed fsync was never retried
    assert "Traceback" not in log
    assert all(v is None for v in committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS).values())
    assert all(v == 0 for v in end_offsets(topics.bootstrap, topics.reply, PARTITIONS).values())  # no ack
    # a restart recovers from the log and stores every event once
    service = topics.service(tmp_path / "wal")
    positions = [
        (p, o) for p, end in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items() for o in range(end)
    ]
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0
    assert sorted(seq for _, seq in acks.values()) == list(range(1, 201))


def test_an_ack_the_broker_refuses_exits_4_commits_nothing_and_keeps_what_it_stored(
    topics: Topics, tmp_path: Path, kafka_admin: KafkaAdminClient
) -> None:
    # A reply topic whose broker-side message limit no ack fits: every ack delivery fails.
    reply = f"tiny-acks-{topics.group}"
    kafka_admin.create_topics([NewTopic(reply, 1, 1, topic_configs={"max.message.bytes": "64"})])
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    # A segment per batch and no bytes retained: retention deletes every segment the store
    # has applied, unless it keeps those whose offsets were never committed.
    config = tmp_path / "consumer.toml"
    config.write_text("[wal]\nsegment_size = 1\n[store]\nretain_wal_bytes = 0\nflush_interval_s = 0.05\n")
    small = {"TIDAL_MAX_POLL_RECORDS": "40"}
    service = topics.service(tmp_path / "wal", env=small, extra=["--reply-topic", reply, "--config", str(config)])
    assert service.process.wait(timeout=120) == 4, service.log()
    service.kill()
    assert "were not delivered" in service.log() and "Traceback" not in service.log()
    assert all(v is None for v in committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS).values())
    stored = dump(tmp_path / "wal")
    assert [r["seq"] for r in stored][:1] == [1], "a segment whose offsets were never committed was deleted"
    assert [r["seq"] for r in stored] == list(range(1, len(stored) + 1))
    assert len(stored) > 40, "several batches were durable before their acks failed"
    # Back with a reply topic that takes acks: what it stored is recognised, never stored again.
    service = topics.service(tmp_path / "wal", env=small, extra=["--config", str(config)])
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert service.stop() == 0, service.log()
    assert sorted(seq for _, seq in acks.values()) == list(range(1, 301))
    assert metric_totals(service.log())["redeliveries"] == len(stored)


def test_a_dead_letter_the_broker_refuses_exits_4_and_commits_nothing(
    topics: Topics, tmp_path: Path, kafka_admin: KafkaAdminClient
) -> None:
    dlq = f"tiny-dlq-{topics.group}"
    kafka_admin.create_topics([NewTopic(dlq, 1, 1, topic_configs={"max.message.bytes": "64"})])
    [(partition, offset), *_] = produce(topics.bootstrap, topics.signals, [b"not json", *[event(i) for i in range(20)]])
    service = topics.service(tmp_path / "wal", extra=["--dlq-topic", dlq])
    assert service.process.wait(timeout=120) == 4, service.log()
    service.kill()
    # Nothing of the bad message's batch is committed (batches polled apart from it may be:
    # they are durable and acked).
    assert (committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS)[partition] or 0) <= offset


def test_an_async_commit_lost_before_a_stop_is_made_good_by_the_drain(
    topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    settings = load_settings(
        bootstrap_servers=topics.bootstrap,
        topics=[topics.signals],
        group_id=topics.group,
        reply_topic=topics.reply,
        dlq_topic=topics.dlq,
        wal_dir=tmp_path / "wal",
    )
    lost: dict[int, int] = {}

    def lose(self: KafkaConsumer, offsets: dict, callback: object = None) -> None:  # a connection reset
        lost.update({tp.partition: meta.offset for tp, meta in offsets.items()})
        callback(offsets, KafkaConnectionError("injected: connection reset under the commit"))  # type: ignore[operator]

    def lose_confluent(self: object, commits: dict, on_done: Callable[..., None]) -> None:
        # librdkafka's consumer is a C type: the fault goes in at the adapter's edge.
        lost.update({partition: offset for (_, partition), (offset, _) in commits.items()})
        on_done(commits, KafkaUnavailable("injected: connection reset under the commit"))

    if backend == "kafka-python":
        monkeypatch.setattr(KafkaConsumer, "commit_async", lose)
    else:
        from consumer.kafka.confluent.adapter import ConfluentAdapter

        monkeypatch.setattr(ConfluentAdapter, "commit_async", lose_confluent)
    service = Service(settings)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    runner.start()
    try:
        acks_cover(topics.bootstrap, topics.reply, positions)
        wanted = {p: o for p, o in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items() if o}
        deadline = time.monotonic() + 60
        while lost != wanted:  # every batch's async commit was tried, and lost
            assert time.monotonic() < deadline, f"async commits seen: {lost}, wanted {wanted}"
            time.sleep(0.05)
    finally:
        service.stop.set()
        runner.join(timeout=60)
    assert codes == [0]
    assert committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS) == {
        p: o or None for p, o in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items()
    }
