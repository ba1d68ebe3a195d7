"""The service loop with a scripted fake Kafka adapter and a real WAL: the orderings a
broker makes hard to force (a revocation with a batch in flight) forced exactly.
No broker (consumer.service talks to Kafka only through consumer.kafka.adapter)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from consumer.config import Settings, load_settings
from consumer.errors import ExitCode
from consumer.kafka.adapter import RebalanceListener
from consumer.protocol.acks import Ack, parse_ack
from consumer.protocol.types import Commits, Offsets, Poll, Polled
from consumer.service import Service
from tests.support.fakes import Send
from walcore import Wal

P0 = ("signals", 0)


def value(i: int) -> bytes:
    return (f'{{"entity_id":{i},"signal_type":"view","weight":1.0,"timestamp_nanos":{i}}}').encode()


class ScriptedKafka:
    """Each poll plays the next step of the script: a callable run inside poll (as a
    rebalance callback would be), then the records it returns."""

    def __init__(
        self, script: list[tuple[Callable[[RebalanceListener], None] | None, Poll]], stop: threading.Event
    ) -> None:
        self.script = script
        self.stop = stop
        self.listener: RebalanceListener
        self.events: list[str] = []  # what happened, in order
        self.pending: list[Send] = []
        self.committed_now: Offsets = {}
        self.acks: list[Ack] = []

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> Poll:
        if not self.script:
            self.stop.set()
            return {}
        during, records = self.script.pop(0)
        if during is not None:
            during(self.listener)
        return records

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Send:
        self.events.append(f"send {topic}")
        if topic == "acks":
            ack = parse_ack(value)
            assert isinstance(ack, Ack)
            self.acks.append(ack)
        send = Send()
        self.pending.append(send)
        return send

    def flush(self) -> None:
        self.events.append("flush")
        for send in self.pending:
            send.settle()

    def commit_async(self, commits: Commits, on_done: Callable[[Commits, BaseException | None], None]) -> None:
        offsets = {p: offset for p, (offset, _) in commits.items()}
        self.events.append(f"commit_async {sorted(offsets.items())}")
        self.committed_now.update(offsets)
        on_done(commits, None)

    def commit_sync(self, commits: Commits) -> None:
        offsets = {p: offset for p, (offset, _) in commits.items()}
        self.events.append(f"commit_sync {sorted(offsets.items())}")
        self.committed_now.update(offsets)

    def committed(
        self, partitions: Sequence[tuple[str, int]], timeout_s: float | None = None
    ) -> dict[tuple[str, int], tuple[int, str] | None]:
        return {p: None for p in partitions}

    def partitions(self, topic: str, timeout_s: float) -> list[int]:
        return [0]

    def watermarks(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        return {p: (0, 1 << 62) for p in partitions}

    def reply_partition(self, topic: str, key: bytes) -> int | None:
        return 0

    def read_from(self, topic: str, partition: int, offset: int) -> list[bytes | None]:
        return []

    def lag(self) -> dict[tuple[str, int], tuple[int, int]] | None:
        return {}

    def close(self) -> None:
        self.events.append("close")


def settings(tmp_path: Path) -> Settings:
    return load_settings(topics=["signals"], reply_topic="acks", dlq_topic="dlq", wal_dir=tmp_path / "wal")


def test_a_revocation_with_a_batch_in_flight_drains_it_before_the_partitions_go(tmp_path: Path) -> None:
    stop = threading.Event()
    batch = {P0: [Polled("signals", 0, offset, None, value(offset)) for offset in range(10)]}

    def revoke(listener: RebalanceListener) -> None:
        listener.revoked([P0])
        kafka.events.append("revoked returned")

    kafka = ScriptedKafka([(None, batch), (revoke, {})], stop)
    service = Service(settings(tmp_path), stop=stop, adapter_factory=lambda _settings, _client_id: kafka)
    assert service.run() == ExitCode.OK
    # The batch was staged (in the WAL's hands, acks not sent) when the revocation came:
    # it was completed, its ack flushed and its offsets committed before revoked() returned.
    revoked_at = kafka.events.index("revoked returned")
    assert kafka.events[:revoked_at] == ["send acks", "flush", "commit_sync [(('signals', 0), 10)]"]
    assert kafka.committed_now == {P0: 10}
    [ack] = kafka.acks
    assert sorted(ack.offsets()) == list(range(10))
    with Wal.open(tmp_path / "wal") as wal:
        assert wal.last_seq == 10


def test_the_stop_drains_and_commits_every_batch(tmp_path: Path) -> None:
    stop = threading.Event()
    polls = [(None, {P0: [Polled("signals", 0, offset, None, value(offset))]}) for offset in range(5)]
    kafka = ScriptedKafka(polls, stop)
    service = Service(settings(tmp_path), stop=stop, adapter_factory=lambda _settings, _client_id: kafka)
    assert service.run() == ExitCode.OK
    assert kafka.committed_now == {P0: 5}
    assert sorted(o for ack in kafka.acks for o in ack.offsets()) == list(range(5))
    assert kafka.events[-1] == "close"
