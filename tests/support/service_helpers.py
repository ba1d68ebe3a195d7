"""Driving the real service (a subprocess) against the real broker."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from consumer.config import Settings
from consumer.protocol import placement
from consumer.protocol.acks import Ack, Rejection, parse_ack
from scripts import kafka_local
from walcore.storage.rocks import RocksEngine
from walcore.storage.signals import decode_score
from walcore.storage.store import SignalStore

BIN = Path(sys.executable).parent
TIDAL = shutil.which("tidal-consumer", path=str(BIN)) or "tidal-consumer"
WALCORE = shutil.which("walcore", path=str(BIN)) or "walcore"
HOOKED = Path(__file__).with_name("hooked_service.py")
T = TypeVar("T")

STARTED: list[Service] = []  # killed after each test by tests/consumer/conftest.py


def event(i: int, **overrides: Any) -> dict[str, Any]:
    value = {
        "entity_id": i,
        "signal_type": ["view", "click", "like", "share", "purchase"][i % 5],
        "weight": 1.0 + i % 7,
        "timestamp_nanos": 1_700_000_000_000_000_000 + i,
    }
    value.update(overrides)
    return value


def produce(bootstrap: str, topic: str, values: Iterable[Any], key: bytes | None = None) -> list[tuple[int, int]]:
    """Send JSON (or raw bytes) values; returns the (partition, offset) of each, in order.
    Each message is keyed by its index unless one ``key`` is given for all (one partition)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = []
    for i, value in enumerate(values):
        raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
        futures.append(producer.send(topic, key=key or str(i).encode(), value=raw))
    producer.flush()
    positions = [(f.get(timeout=30).partition, f.get(timeout=30).offset) for f in futures]
    producer.close()
    return positions


def consumer_options(backend: str | None = None, **options: int) -> str:
    """A ``[kafka.consumer]`` table of these options (kafka-python names, e.g.
    ``session_timeout_ms``) in the names of ``backend`` (default: the one the test runs,
    TIDAL_BACKEND): librdkafka's are the same words joined by dots."""
    confluent = (backend or os.environ.get("TIDAL_BACKEND")) == "confluent"
    lines = [
        f'"{name.replace("_", ".")}" = {value}' if confluent else f"{name} = {value}" for name, value in options.items()
    ]
    return "[kafka.consumer]\n" + "\n".join(lines) + "\n"


class Service:
    """`tidal-consumer run` in a subprocess; its log goes to a file tests can await."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        wal_dir: Path,
        *,
        group: str,
        reply: str,
        dlq: str,
        env: dict[str, str] | None = None,
        extra: list[str] | None = None,
        hooked: bool = False,
        log_dir: Path | None = None,
        unprivileged: bool = False,
        own_group: bool = False,
    ) -> None:
        """``hooked``: run tests/support/hooked_service.py (the CLI with the faults its ``env`` asks for).
        The log goes beside the WAL directory unless ``log_dir`` says where. ``unprivileged``:
        without any capability (root then obeys file permissions like any user). ``own_group``:
        a process group of its own, so a test can signal the whole group as systemd would."""
        self.log_path = (log_dir or wal_dir.parent) / f"{wal_dir.name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        command = [sys.executable, str(HOOKED)] if hooked else [TIDAL]
        if unprivileged:
            command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *command]
        self.process = subprocess.Popen(
            [
                *command,
                "run",
                "--bootstrap-servers",
                bootstrap,
                "--topic",
                topic,
                "--group-id",
                group,
                "--reply-topic",
                reply,
                "--dlq-topic",
                dlq,
                "--wal-dir",
                str(wal_dir),
                *(extra or []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TIDAL_METRICS_INTERVAL_S": "1", **(env or {})},
            # an interrupted test run leaves no service behind
            preexec_fn=kafka_local.die_with_parent,  # noqa: PLW1509 - prctl only, async-signal-safe
            start_new_session=own_group,
        )
        STARTED.append(self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        return self._await_log(lambda log: re.search(pattern, log), repr(pattern), timeout)

    def wait_for_more(self, needle: str, more: int, timeout: float = 60.0) -> None:
        """Await ``more`` new occurrences of ``needle`` in the log (the service prints a
        progress line every second in tests): proof it stayed up that long."""
        target = self.log().count(needle) + more
        self._await_log(lambda log: log.count(needle) >= target, f"{more} more {needle!r} lines", timeout)

    def _await_log(self, found: Callable[[str], T], what: str, timeout: float) -> T:
        """Poll the log file (the service appends to it as it goes) until ``found(log)``
        is truthy; fail at once if the service exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            result = found(log)
            if result:
                return result
            if self.process.poll() is not None:
                raise AssertionError(f"service exited {self.process.returncode} before {what}:\n{log}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} in the service log after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


METRIC = re.compile(r"(\w+(?:/s)?)=(\d+(?:\.\d+)?)")


def metric_totals(log: str) -> dict[str, float]:
    """The service's progress lines summed per counter (``events/s`` is the highest seen)."""
    totals: dict[str, float] = {}
    for line in log.splitlines():
        if "events/s=" not in line:
            continue
        for name, value in METRIC.findall(line):
            totals[name] = (
                max(totals.get(name, 0.0), float(value))
                if name == "events/s"
                else (totals.get(name, 0.0) + float(value))
            )
    return totals


def read_topic(
    bootstrap: str, topic: str, *, until: Any, timeout: float = 60.0, committed_only: bool = False
) -> list[Any]:
    """All messages of a topic from the beginning, until ``until(messages)`` is true;
    ``committed_only``: as a reader of committed messages sees them (aborted transactions
    left out)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    partitions = consumer.partitions_for_topic(topic) or set()
    deadline = time.monotonic() + timeout
    while not partitions and time.monotonic() < deadline:
        time.sleep(0.1)
        partitions = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    consumer.seek_to_beginning()
    messages: list[Any] = []
    while not until(messages):
        if time.monotonic() > deadline:
            consumer.close()
            raise AssertionError(f"gave up waiting on {topic}: {len(messages)} message(s) so far")
        for batch in consumer.poll(timeout_ms=200).values():
            messages.extend(batch)
    consumer.close()
    return messages


def ack_index(messages: list[Any]) -> dict[tuple[int, int], tuple[str, Any]]:
    """(partition, offset) -> ("acked", seq) | ("duplicate", seq) | ("rejected", reason), last ack wins."""
    index: dict[tuple[int, int], tuple[str, Any]] = {}
    for message in messages:
        ack = parse_ack(message.value)
        assert isinstance(ack, Ack), f"not an ack on the reply topic: {ack}"
        for offset in ack.offsets():
            outcome = ack.outcome(offset)
            if isinstance(outcome, Rejection):
                index[(ack.partition, offset)] = ("rejected", outcome.reason)
            else:
                assert outcome is not None
                index[(ack.partition, offset)] = ("duplicate" if outcome.duplicate else "acked", outcome.seq)
    return index


class AckWatcher:
    """Reads the reply topic from its end as of construction: acks published from now on."""

    def __init__(self, bootstrap: str, reply: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
        partitions = [TopicPartition(reply, p) for p in sorted(self._consumer.partitions_for_topic(reply) or ())]
        self._consumer.assign(partitions)
        for tp, end in self._consumer.end_offsets(partitions).items():
            self._consumer.seek(tp, end)

    def wait_for_any(self, positions: set[tuple[int, int]], timeout: float) -> float:
        """The monotonic time at which an ack covering one of ``positions`` was read."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for messages in self._consumer.poll(timeout_ms=20).values():
                    if positions & set(ack_index(messages)):
                        return time.monotonic()
            raise AssertionError(f"no ack for any of {len(positions)} positions within {timeout}s")
        finally:
            self._consumer.close()


def acks_cover(bootstrap: str, reply: str, positions: list[tuple[int, int]], timeout: float = 90.0) -> dict:
    wanted = set(positions)
    messages = read_topic(bootstrap, reply, until=lambda m: wanted <= set(ack_index(m)), timeout=timeout)
    return ack_index(messages)


def dump(wal_dir: Path) -> list[dict[str, Any]]:
    """The WAL's events (`walcore dump --json`). A WAL a SIGKILL left with a torn tail (the
    next batch half written: never acked) dumps its intact frames and exits 1 saying so;
    the service cuts that tail when it opens the WAL. Any other failure raises."""
    result = subprocess.run([WALCORE, "dump", str(wal_dir), "--json"], capture_output=True, text=True, check=False)
    if result.returncode != 0 and not (result.returncode == 1 and "stopped at torn tail" in result.stderr):
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()]


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    """The group's committed offsets; None: nothing committed past the partition's start (a
    WAL registers with a commit of the start before it stores anything, docs/acks.md)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    result = {p: consumer.committed(TopicPartition(topic, p)) or None for p in range(partitions)}
    consumer.close(autocommit=False)
    return result


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    consumer.close()
    return {tp.partition: offset for tp, offset in ends.items()}


def homes_of(messages: list) -> dict[tuple[int, int], set[tuple[str, int]]]:
    """Every (wal_id, seq) any ack gave each (partition, offset)."""
    homes: dict[tuple[int, int], set[tuple[str, int]]] = defaultdict(set)
    for message in messages:
        ack = parse_ack(message.value)
        assert isinstance(ack, Ack)
        for offset in ack.offsets():
            outcome = ack.outcome(offset)
            if outcome is not None and hasattr(outcome, "seq"):
                homes[(ack.partition, offset)].add((outcome.wal_id, outcome.seq))
    return homes


def placement_of(store_dir: Path) -> placement.Held | None:
    """The store's placement record (consumer.protocol.placement), read after the service."""
    store = SignalStore(RocksEngine(store_dir, read_only=True), Settings().signal_schema())
    try:
        return placement.decode(store.placement(), store.applied_seq)
    finally:
        store.close()


def applied_counts(store_dir: Path) -> dict[tuple[int, int], int]:
    """(entity, signal type) -> events the store holds, read beside (after) the service."""
    engine = RocksEngine(store_dir, read_only=True)
    try:
        return {
            (int.from_bytes(key[:8], "big"), int.from_bytes(key[10:12], "big")): decode_score(value).count
            for key, value in engine.scan("scores", b"")
        }
    finally:
        engine.close()
