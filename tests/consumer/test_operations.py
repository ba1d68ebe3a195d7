"""The service's HTTP endpoints against a real broker and a real process: /metrics counts
what the WAL and the reply topic hold; /readyz is false before the group join and true
after; /healthz true while the loop turns."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts import kafka_local
from tests.support.consumer_fixtures import Topics
from tests.support.service_helpers import Service, acks_cover, consumer_options, dump, event, produce

pytestmark = pytest.mark.kafka


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def await_endpoint(port: int, path: str, status: int, service: Service, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code, body = get(port, path)
        except OSError:  # not listening yet
            code, body = 0, b"{}"
        if code == status:
            return json.loads(body)
        assert service.process.poll() is None, service.log()
        time.sleep(0.05)
    raise AssertionError(f"{path} never answered {status}:\n{service.log()}")


def samples(port: int) -> dict[str, float]:
    code, body = get(port, "/metrics")
    assert code == 200
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def test_metrics_count_what_the_wal_and_the_reply_topic_hold(topics: Topics, tmp_path: Path) -> None:
    port = kafka_local.free_port()
    positions = produce(
        topics.bootstrap, topics.signals, [*[event(i) for i in range(500)], event(1), b"not json", b"{}"]
    )
    service = topics.service(
        tmp_path / "wal", env={"TIDAL_METRICS_PORT": str(port), "TIDAL_STORE__FLUSH_INTERVAL_S": "0.5"}
    )
    acks = acks_cover(topics.bootstrap, topics.reply, positions)
    assert await_endpoint(port, "/readyz", 200, service)["ok"] is True
    assert await_endpoint(port, "/healthz", 200, service)["ok"] is True
    deadline = time.monotonic() + 30
    # Gauges are sampled each second here; the store reports after its flushes.
    while ((found := samples(port)).get("tidal_wal_last_seq"), found.get("tidal_store_applied_seq")) != (500, 500):
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    assert service.stop() == 0, service.log()
    stored = len(dump(tmp_path / "wal"))
    assert found["tidal_events_consumed_total"] == len(positions) == 503
    assert found["tidal_events_stored_total"] == stored == 500
    assert found["tidal_events_duplicate_total"] == 1  # event(1) sent twice
    assert found["tidal_events_rejected_total{reason=value}"] == 1  # not JSON
    assert found["tidal_events_rejected_total{reason=entity_id}"] == 1  # {} misses entity_id first
    assert sum(kind == "rejected" for kind, _ in acks.values()) == 2
    assert found["tidal_batch_size_events_count"] >= 1 and found["tidal_wal_commit_seconds_count"] >= 1
    assert found["tidal_wal_fsync_seconds_count"] >= 1
    assert found["tidal_wal_segments"] == 1 and found["tidal_wal_bytes"] > 0
    assert found["tidal_rebalances_total{kind=assigned}"] >= 1
    assert any(name.startswith("tidal_build_info") for name in found)
    assert found["tidal_dedup_window_keys"] == 500 and found["tidal_dedup_window_bytes"] > 500 * 26
    ends = {name: value for name, value in found.items() if name.startswith("tidal_partition_end_offset")}
    assert sum(ends.values()) == len(positions) and found["tidal_consumer_lag_events"] == 0


def test_readyz_is_false_until_the_service_has_joined_the_group(tmp_path: Path) -> None:
    port = kafka_local.free_port()
    service = Service(
        "127.0.0.1:1", "signals", tmp_path / "wal", group="g", reply="r", dlq="d", env={"TIDAL_METRICS_PORT": str(port)}
    )
    body = await_endpoint(port, "/readyz", 503, service)
    assert body["ok"] is False and body["reason"]
    assert service.stop() == 0


def test_status_shows_lag_per_partition_and_the_wals_last_seq(topics: Topics, tmp_path: Path) -> None:
    import subprocess

    from tests.support.service_helpers import TIDAL, end_offsets

    first = produce(topics.bootstrap, topics.signals, [event(i) for i in range(300)])
    service = topics.service(tmp_path / "wal")
    acks_cover(topics.bootstrap, topics.reply, first)
    assert service.stop() == 0
    produce(topics.bootstrap, topics.signals, [event(i) for i in range(300, 350)])  # not consumed: lag 50
    # A client option in the configured backend's own names: status uses that backend too.
    config = tmp_path / "status.toml"
    config.write_text(consumer_options(session_timeout_ms=12000))

    def status(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                TIDAL,
                "status",
                "--bootstrap-servers",
                topics.bootstrap,
                "--topic",
                topics.signals,
                "--group-id",
                topics.group,
                "--wal-dir",
                str(tmp_path / "wal"),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    result = status("--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    status_json = json.loads(result.stdout)
    ends = end_offsets(topics.bootstrap, topics.signals, 4)
    assert {row["partition"]: row["end"] for row in status_json["partitions"]} == ends
    assert status_json["total_lag"] == 50
    assert status_json["wal"]["last_seq"] == 300 and 0 <= status_json["wal"]["newest_event_age_s"] < 120
    result = status()
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "total lag 50" in text and "last seq 300" in text


def test_healthz_fails_once_the_wal_writer_failed(
    topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (fsync EIO injected); the endpoints are kept up past the exit so the
    probe's answer at that moment can be read."""
    import errno
    import os
    import threading

    from consumer.config import load_settings
    from consumer.ops.health import Endpoints
    from consumer.service import Service as InProcess

    port = kafka_local.free_port()
    produce(topics.bootstrap, topics.signals, [event(i) for i in range(50)])
    settings = load_settings(
        bootstrap_servers=topics.bootstrap,
        topics=[topics.signals],
        group_id=topics.group,
        reply_topic=topics.reply,
        dlq_topic=topics.dlq,
        wal_dir=tmp_path / "wal",
    )
    settings = settings.model_copy(update={"metrics_port": port})

    def eio(_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error (injected)")

    kept: list[Endpoints] = []
    monkeypatch.setattr(Endpoints, "close", lambda self: kept.append(self))  # noqa: PLW0108 - a method: needs self
    monkeypatch.setattr(os, "fdatasync", eio)
    service = InProcess(settings)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(service.run()))
    runner.start()
    runner.join(timeout=120)
    assert codes == [3]
    try:
        status, body = get(port, "/healthz")
        assert status == 503 and "the WAL writer failed" in json.loads(body)["reason"]
        assert get(port, "/readyz")[0] == 503
    finally:
        monkeypatch.undo()
        for endpoints in kept:
            endpoints.close()
