"""Fault injection in the service (in-process, real broker): fsync EIO is fatal; a lost
async commit is made good by the drain."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest
from consumer_fixtures import PARTITIONS, Topics
from kafka import KafkaConsumer
from kafka.errors import KafkaConnectionError
from service_helpers import acks_cover, committed, end_offsets, event, produce

from consumer.config import load_settings
from consumer.service import EXIT_WAL_FATAL, Service

pytestmark = pytest.mark.kafka


def test_fsync_eio_exits_3_publishes_no_ack_and_commits_nothing(topics: Topics, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    produce(topics.bootstrap, topics.signals, [event(i) for i in range(200)])
    settings = load_settings(bootstrap_servers=topics.bootstrap, topics=[topics.signals], group_id=topics.group,
                             reply_topic=topics.reply, dlq_topic=topics.dlq, wal_dir=tmp_path / "wal")
    calls: list[int] = []

    def eio(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    service = Service(settings)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    runner.start()
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert codes == [EXIT_WAL_FATAL]
    assert len(calls) == 1  # the failed fsync was not retried
    assert all(v is None for v in committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS).values())
    assert all(v == 0 for v in end_offsets(topics.bootstrap, topics.reply, PARTITIONS).values())  # no ack
    monkeypatch.undo()
    # a restart recovers from the log and stores every event once
    codes.clear()
    service = Service(settings)
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    runner.start()
    try:
        positions = [(p, o) for p in range(PARTITIONS)
                     for o in range(end_offsets(topics.bootstrap, topics.signals, PARTITIONS)[p])]
        acks = acks_cover(topics.bootstrap, topics.reply, positions)
    finally:
        service.request_stop()
        runner.join(timeout=60)
    assert codes == [0]
    assert sorted(seq for _, seq in acks.values()) == list(range(1, 201))


def test_an_async_commit_lost_before_a_stop_is_made_good_by_the_drain(topics: Topics, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    positions = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    settings = load_settings(bootstrap_servers=topics.bootstrap, topics=[topics.signals], group_id=topics.group,
                             reply_topic=topics.reply, dlq_topic=topics.dlq, wal_dir=tmp_path / "wal")
    lost: dict[int, int] = {}

    def lose(self: KafkaConsumer, offsets: dict, callback: object = None) -> None:  # a connection reset
        lost.update({tp.partition: meta.offset for tp, meta in offsets.items()})
        callback(offsets, KafkaConnectionError("injected: connection reset under the commit"))  # type: ignore[operator]

    monkeypatch.setattr(KafkaConsumer, "commit_async", lose)
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
        service.request_stop()
        runner.join(timeout=60)
    assert codes == [0]
    assert committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS) == {
        p: o or None for p, o in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items()}
