"""The deployable pieces agree with the service: every metric the Grafana dashboard queries
is one the service exports; the Kubernetes manifest's probes, port, instance id, volume and
grace period match what the service serves and needs. No broker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry

from consumer.config import Settings
from consumer.ops.health import Endpoints, Health
from consumer.ops.metric_defs import PrometheusMetrics
from consumer.serving.api import QueryApi

ROOT = Path(__file__).resolve().parent.parent


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "info": ("_info",),
            "gauge": ("",),
        }[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tidal-consumer.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\btidal_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried - exported_names() == set()


def test_the_manifests_probes_ports_and_volume_match_the_service() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "statefulset.yaml").read_text()))
    statefulset = next(d for d in documents if d["kind"] == "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    port = int(env["TIDAL_METRICS_PORT"]["value"])
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named_ports[container["livenessProbe"]["httpGet"]["port"]] == port
    assert named_ports[container["readinessProbe"]["httpGet"]["port"]] == port
    assert env["TIDAL_METRICS_HOST"]["value"] == "0.0.0.0"
    assert env["TIDAL_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["TIDAL_WAL_DIR"]["value"]
    assert pod["terminationGracePeriodSeconds"] > Settings().commit_retry_max_s  # the drain's bound
    # group-wide queries resolve the headless service: every pod, ready or not, on the query port
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    # the probe paths are the ones the service answers (not 404)
    health = Health(stall_s=60)
    endpoints = Endpoints("127.0.0.1", 0, health, CollectorRegistry(), QueryApi(lambda: None))
    try:
        for probe in ("livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{endpoints.port}{path}", timeout=5) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            assert status in (200, 503), (path, status)
    finally:
        endpoints.close()


def test_the_container_and_compose_serve_the_metrics_port() -> None:
    assert "EXPOSE 9400" in (ROOT / "Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    consumer = compose["services"]["consumer"]
    assert consumer["environment"]["TIDAL_METRICS_PORT"] == "9400" and "9400:9400" in consumer["ports"]


def test_the_image_installs_from_a_lock_that_pins_every_runtime_dependency_within_its_range() -> None:
    """A reproducible image: the Dockerfile installs the [librdkafka] extra constrained by
    requirements.lock, which pins each runtime dependency to a version pyproject allows."""
    assert "pip install --no-cache-dir -c requirements.lock '.[librdkafka]'" in (ROOT / "Dockerfile").read_text()
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["librdkafka"]]]
    for requirement in wanted:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_the_wheel_holds_every_module_of_both_packages(tmp_path: Path) -> None:
    """What the image and `pip install tidal-consumer` get: a wheel built from the tracked
    files alone (no stale build/ directory) holds every module and py.typed of consumer/
    and walcore/, subpackages included (an explicit package list once left them out)."""
    tracked = subprocess.run(
        ["git", "ls-files", "pyproject.toml", "README.md", "consumer", "walcore"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    source = tmp_path / "source"
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path / "wheel")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith(("consumer/", "walcore/"))}
    assert packaged == {name for name in tracked if name.startswith(("consumer/", "walcore/"))}
