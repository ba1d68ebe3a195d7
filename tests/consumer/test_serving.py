"""The query API and the group-wide answer, against the real broker and real service
processes: answers equal a naive recomputation from the live events of the WALs
(`walcore dump --json`); a read-your-writes token returns the just-acked event every time;
bad input is a 400 with the reason; a store of the group that does not answer makes the
answer incomplete (and the CLI exit 9), never silently partial."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from consumer.client import DurableProducer, DurableResult
from consumer.config import Settings
from consumer.protocol.placement import Homes, as_held
from consumer.serving import SignalClient
from scripts import kafka_local
from tests.support.consumer_fixtures import Topics
from tests.support.service_helpers import TIDAL, Service, acks_cover, consumer_options, dump, event, produce
from tests.support.walcore_helpers import assert_same_ranking, naive_ranking, naive_signals
from walcore import EventRecord
from walcore.storage.signals import NANOS, lambda_per_ns

pytestmark = pytest.mark.kafka

SCHEMA = Settings().signal_schema()
BASE = 1_700_000_000_000_000_000
HOUR = 3600 * NANOS


def get(port: int, target: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{target}", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def await_ready(port: int, service: Service, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(port, "/readyz")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        assert service.process.poll() is None, service.log()
        time.sleep(0.05)
    raise AssertionError(f"never ready:\n{service.log()}")


def start(topics: Topics, wal_dir: Path, tmp_path: Path) -> tuple[Service, int]:
    port = kafka_local.free_port()
    config = tmp_path / f"{wal_dir.name}.toml"
    config.write_text(consumer_options(session_timeout_ms=6000, heartbeat_interval_ms=1000))
    service = topics.service(wal_dir, env={"TIDAL_METRICS_PORT": str(port)}, extra=["--config", str(config)])
    await_ready(port, service)
    return service, port


def live_records(wal_dirs: list[Path]) -> list[EventRecord]:
    return [
        EventRecord(row["entity_id"], row["signal_type"], row["weight"], row["timestamp_nanos"])
        for wal_dir in wal_dirs
        for row in dump(wal_dir)
        if not row["voided"]
    ]


def assert_signals_match(signals: dict[str, Any], records: list[EventRecord], entity: int, at: int) -> None:
    expected = naive_signals(records, entity, at, SCHEMA)
    assert set(signals) == set(expected), (entity, signals, expected)
    for name, (score, windows, velocity) in expected.items():
        got = signals[name]
        assert got["score"] == pytest.approx(score, rel=1e-9, abs=1e-12), (entity, name)
        assert got["windows"] == {f"{w}s": n for w, n in windows.items()}, (entity, name)
        assert got["count"] == sum(
            1 for r in records if r.entity_id == entity and SCHEMA.by_name[name].id == r.signal_type
        )
        if velocity is not None:
            assert (got["velocity"]["per_hour"], got["velocity"]["change"]) == pytest.approx(velocity)


def token(result: DurableResult) -> str:
    return f"{result.wal_id}:{result.seq}"


def query_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TIDAL, "query", *args], check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.backends("confluent")  # the query API reads the store; the group view's reads are in the adapter contract
def test_one_instance_answers_exactly_reads_your_writes_and_refuses_bad_input(
    topics: Topics, tmp_path: Path, backend: str
) -> None:
    service, port = start(topics, tmp_path / "wal", tmp_path)
    rng = random.Random(7)
    with DurableProducer(topics.bootstrap, topics.signals, topics.reply, backend=backend) as producer:
        futures = [
            producer.send(
                event(
                    i, entity_id=i % 20, weight=rng.uniform(-2, 5), timestamp_nanos=BASE + rng.randrange(0, 48 * HOUR)
                )
            )
            for i in range(300)
        ]
        results = [f.result(timeout=90) for f in futures]
        last = max(results, key=lambda r: r.seq)
        at = BASE + 49 * HOUR
        records = live_records([tmp_path / "wal"])  # read beside the running service
        assert len(records) == 300
        for entity in range(20):
            status, answer = get(port, f"/v1/entities/{entity}?at={at}&after={token(last)}")
            assert status == 200, answer
            assert answer["store"]["wal_id"] == last.wal_id and answer["store"]["applied_seq"] >= last.seq
            assert answer["store"]["wal_last_seq"] >= 300 and answer["group_wals"] == [last.wal_id]
            assert_signals_match(answer["signals"], records, entity, at)
        for signal in ("view", "share"):
            lam = lambda_per_ns(SCHEMA.by_name[signal].half_life_seconds)
            expected = naive_ranking(records, SCHEMA.by_name[signal].id, lam, at)
            for k in (3, 50):
                status, answer = get(port, f"/v1/top?signal={signal}&k={k}&at={at}")
                assert status == 200, answer
                assert_same_ranking([tuple(pair) for pair in answer["entities"]], expected, k)
        # DurableProducer keys each event by its entity: the store's placement record,
        # kept by the applier process from each batch's sources, places every entity.
        held = as_held(answer["placement"])
        assert held is not None and set(held) == {topics.signals}
        assert Homes.of_answers({"me": held}) is not None

        # Read your writes: the store answers with the event its ack just named, every time.
        for round_ in range(25):
            result = producer.send_and_wait(
                event(1000 + round_, entity_id=777, signal_type="view", timestamp_nanos=BASE + round_)
            )
            status, answer = get(port, f"/v1/entities/777?at={BASE + HOUR}&after={token(result)}")
            assert status == 200 and answer["signals"]["view"]["count"] == round_ + 1, answer
        status, answer = get(port, f"/v1/entities/777?after={last.wal_id}:{10**9}&wait_ms=300")
        assert status == 503 and answer["error"].startswith("not yet applied (applied_seq ")
        assert answer["applied_seq"] >= 325
        # A token of another WAL is that store's business, not this one's.
        assert get(port, "/v1/entities/777?after=0123456789abcdef:5&wait_ms=0")[0] == 200
        # Each of those waits caught up with the applier: the metric counts the catch-ups.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        caught_up = re.search(r"^tidal_store_catch_up_seconds_count (\S+)$", metrics, re.MULTILINE)
        assert caught_up is not None and float(caught_up.group(1)) >= 25, metrics

    # Bad input: 400 with the reason, naming the parameter.
    for target, reason in [
        ("/v1/entities/-1", "entity '-1'"),
        (f"/v1/entities/{2**64}", "entity"),
        ("/v1/entities/x1", "entity 'x1'"),
        ("/v1/entities/1?at=yesterday", "at 'yesterday'"),
        ("/v1/entities/1?at=1969-12-31T23:59:59.5Z", "outside the event time range"),
        ("/v1/entities/1?at=9999-01-01T00:00:00Z", "outside the event time range"),
        ("/v1/top?signal=teleport&k=3", "unknown signal type 'teleport'"),
        ("/v1/top?signal=view&k=0", "k '0'"),
        ("/v1/top?signal=view&k=10001", "k '10001'"),
        ("/v1/top?k=3", "signal: required"),
        ("/v1/top?signal=view&k=3&k=4", "given 2 times"),
        ("/v1/entities/1?after=nope", "after 'nope'"),
        ("/v1/entities/1?wait_ms=-5", "wait_ms"),
    ]:
        status, answer = get(port, target)
        assert status == 400 and reason in answer["error"], (target, answer)
    assert get(port, "/v1/nothing")[0] == 404

    # The CLI over the API: one store, the whole group's so far: complete, exit 0.
    answered = query_cli("--entity", "3", "--at", str(at), "--json", "--peers", f"127.0.0.1:{port}")
    assert answered.returncode == 0, answered.stderr
    found = json.loads(answered.stdout)
    assert found["complete"] and found["missing_wals"] == [] and found["stores"][0]["wal_id"] == last.wal_id
    assert_signals_match(found["result"], records, 3, at)
    text = query_cli("--top", "3", "--signal", "view", "--at", str(at), "--peers", f"127.0.0.1:{port}")
    assert text.returncode == 0 and text.stdout.startswith("complete answer at ") and "   1. entity " in text.stdout
    by_name = query_cli("--entity", "3", "--at", str(at), "--json", "--peers-dns", f"localhost:{port}")
    assert by_name.returncode == 0 and json.loads(by_name.stdout)["result"] == found["result"], by_name.stderr
    assert query_cli("--entity", "-3", "--peers", f"127.0.0.1:{port}").returncode == 2
    assert service.stop() == 0, service.log()

    # A second instance on another WAL takes over; the first one's store is gone from the
    # network, and every answer says so: incomplete, the missing WAL named, exit 9.
    second, second_port = start(topics, tmp_path / "wal2", tmp_path)
    acks_cover(topics.bootstrap, topics.reply, produce(topics.bootstrap, topics.signals, [event(5000)]))
    partial = query_cli("--entity", "3", "--json", "--peers", f"127.0.0.1:{second_port}")
    assert partial.returncode == 9, partial.stderr
    found = json.loads(partial.stdout)
    assert not found["complete"] and found["missing_wals"] == [last.wal_id]
    unreachable = query_cli("--entity", "3", "--peers", f"127.0.0.1:{second_port},127.0.0.1:{port}")
    assert unreachable.returncode == 9 and f"peer 127.0.0.1:{port} failed" in unreachable.stdout
    assert second.stop() == 0, second.log()


@pytest.mark.backends("kafka-python")
def test_group_answers_equal_a_naive_recomputation_while_partitions_move(topics: Topics, tmp_path: Path) -> None:
    """Three instances with stores; ~1,000 entities' events from DurableProducer; partitions
    moved twice mid-stream (an instance stopped past the session timeout, a new one
    started, the stopped one back). Then every merged entity answer and top-k (k = 10, 100)
    at three times equals the naive recomputation from the live events of every WAL; one
    instance down makes the answer incomplete."""
    rng = random.Random(11)
    wal_dirs = [tmp_path / f"wal-{name}" for name in "abcd"]
    running = {name: start(topics, wal_dir, tmp_path) for name, wal_dir in zip("abc", wal_dirs)}

    def peers() -> list[str]:
        return [f"127.0.0.1:{port}" for _, port in running.values()]

    def send_chunk(producer: DurableProducer, start_at: int, count: int) -> list[DurableResult]:
        futures = [
            producer.send(
                event(
                    i,
                    entity_id=rng.randrange(1000),
                    signal_type=rng.choice(["view", "click"]),
                    weight=rng.choice([1.0, 2.0, rng.uniform(-1, 4)]),
                    timestamp_nanos=BASE + rng.randrange(0, 24 * HOUR),
                ),
                key=str(i).encode(),
            )
            for i in range(start_at, start_at + count)
        ]
        return [f.result(timeout=120) for f in futures]

    with DurableProducer(topics.bootstrap, topics.signals, topics.reply) as producer:
        results = send_chunk(producer, 0, 1500)
        # Move 1: c stops (a static member: its partitions stay until the session times out).
        stopped, _ = running.pop("c")
        assert stopped.stop() == 0, stopped.log()
        results += send_chunk(producer, 1500, 1500)
        # Move 2: a new instance joins on a WAL of its own.
        running["d"] = start(topics, wal_dirs[3], tmp_path)
        results += send_chunk(producer, 3000, 1500)
        with SignalClient(peers()) as client:  # read your writes through the group client
            for round_ in range(10):
                result = producer.send_and_wait(
                    event(9000 + round_, entity_id=5000, signal_type="view", timestamp_nanos=BASE + round_)
                )
                answer = client.entity(5000, at_ns=BASE + HOUR, after=[result])
                assert result.wal_id in {store["wal_id"] for store in answer.stores}
                assert answer.value["view"]["count"] == round_ + 1, answer
    assert len({r.wal_id for r in results}) >= 3, "the partitions did not move"
    # Keyed by index, not entity: an entity's events are in several partitions, so the stores'
    # placement records place nothing (every store stays a possible home of every entity).
    found = {name: get(port, "/v1/top?signal=view&k=1")[1] for name, (_, port) in running.items()}
    assert Homes.of_answers({name: as_held(answer["placement"]) for name, answer in found.items()}) is None
    running["c"] = start(topics, wal_dirs[2], tmp_path)  # every WAL's store answers again

    records = live_records(wal_dirs)
    assert len(records) == 4510
    latest = max(r.timestamp_nanos for r in records)
    with SignalClient(peers()) as client:
        for at in (latest + HOUR, latest, BASE + 12 * HOUR):
            for entity in [*rng.sample(range(1000), 60), 5000]:
                answer = client.entity(entity, at_ns=at)
                assert answer.complete, answer
                assert_signals_match(answer.value, records, entity, at)
            for signal in ("view", "click"):
                lam = lambda_per_ns(SCHEMA.by_name[signal].half_life_seconds)
                expected = naive_ranking(records, SCHEMA.by_name[signal].id, lam, at)
                for k in (10, 100):
                    answer = client.top(signal, k, at_ns=at)
                    assert answer.complete and len(answer.stores) == 4, answer.to_json()
                    assert_same_ranking([tuple(pair) for pair in answer.value], expected, k)
    # Entities with live events in several WALs: only the merge makes their answers whole.
    homes: dict[int, set[Path]] = {}
    for wal_dir in wal_dirs:
        for row in dump(wal_dir):
            if not row["voided"]:
                homes.setdefault(row["entity_id"], set()).add(wal_dir)
    assert sum(len(found) >= 3 for found in homes.values()) > 100
    down, _ = running.pop("d")
    assert down.stop() == 0, down.log()
    with SignalClient(peers()) as client:
        answer = client.entity(1, at_ns=latest)
        assert not answer.complete and answer.missing == [(wal_dirs[3] / "WAL_ID").read_text().strip()]
    partial = query_cli("--top", "10", "--signal", "view", "--peers", ",".join(peers()))
    assert partial.returncode == 9 and partial.stdout.startswith("INCOMPLETE answer")
    for service, _ in running.values():
        assert service.stop() == 0, service.log()
