"""A real single-node Apache Kafka broker on 127.0.0.1, with or without Docker.

Three ways to get the *same* broker version (pinned once, in config/kafka/VERSION):

1. ``TIDAL_KAFKA_BOOTSTRAP=host:port`` is set: use that broker as it is.
2. A Docker engine answers: the official ``apache/kafka`` image.
3. Otherwise: the broker jars from Maven Central (config/kafka/pom.xml), cached under
   the user's cache directory, formatted for KRaft and started with ``java``.

Used by ``make kafka-up`` / ``make kafka-down`` (a broker that outlives the command),
by the pytest session fixture (a broker that dies with the test process) and by the
demo and benchmarks. Readiness is awaited on the broker's own "Kafka Server started"
log line and a TCP connect, never by sleeping a fixed time.

Usage: python scripts/kafka_local.py up|down|status [--port 9092]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
KAFKA_DIR = ROOT / "config" / "kafka"
KAFKA_VERSION = (KAFKA_DIR / "VERSION").read_text().strip()
DOCKER_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
READY_LINE = "Kafka Server started"
START_TIMEOUT_S = 90.0


class BrokerUnavailable(RuntimeError):
    """No way to run a broker here; the message says what to install."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "tidal-consumer" / f"kafka-{KAFKA_VERSION}"


def state_dir() -> Path:
    """Where `make kafka-up` keeps the pid, data and log of its long-lived broker."""
    return Path(os.environ.get("TIDAL_KAFKA_STATE", ROOT / ".kafka"))


def docker_available() -> bool:
    try:
        import docker  # noqa: PLC0415 - optional: only needed when an engine exists

        return bool(docker.from_env(timeout=3).ping())
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def ensure_jars() -> Path:
    """Download the broker's runtime jars once; later calls download nothing."""
    libs = cache_dir() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise BrokerUnavailable(
            "No Docker engine answered and "
            + " and ".join(missing)
            + " not found on PATH. Install either a Docker engine, or Java 17+ and Maven "
            "(Debian: apt-get install openjdk-17-jre-headless maven), or point the tests "
            "at a running broker with TIDAL_KAFKA_BOOTSTRAP=host:port."
        )
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs-", dir=cache_dir()))
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(KAFKA_DIR / "pom.xml"),
        "dependency:copy-dependencies",
        f"-Dkafka.version={KAFKA_VERSION}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    print(f"kafka: downloading Apache Kafka {KAFKA_VERSION} jars (once) ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise BrokerUnavailable(f"Downloading the Kafka jars failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    (tmp / ".complete").write_text(KAFKA_VERSION)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


class SecureListener(NamedTuple):
    """A SASL_SSL listener (SCRAM-SHA-512 over TLS) beside the plaintext one: ``keystore``
    is a PEM file holding the server's private key and certificate chain; ``users`` are
    created when the storage is formatted."""

    port: int
    keystore: Path
    users: dict[str, str]


def _server_properties(port: int, controller_port: int, data_dir: Path, secure: SecureListener | None) -> str:
    listeners = f"PLAINTEXT://127.0.0.1:{port}" + (f",SASL_SSL://127.0.0.1:{secure.port}" if secure else "")
    secure_lines = (
        [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={secure.keystore}",
        ]
        if secure
        else []
    )
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
            f"listeners={listeners},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners={listeners}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            *secure_lines,
            f"log.dirs={data_dir / 'logs'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "",
        ]
    )


_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
"""


def die_with_parent() -> None:
    """preexec_fn: the broker gets SIGTERM when the process that started it dies,
    so an interrupted or killed test run never leaves a java process behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class JarBroker:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_file: Path
    log_start: int = 0  # where this run's lines begin in log_file

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def stop(self) -> None:
        stop_pid(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


def start_jar_broker(
    data_dir: Path, port: int, *, tied_to_parent: bool, secure: SecureListener | None = None
) -> JarBroker:
    """Format a fresh KRaft log dir and start the broker; returns once it serves."""
    controller_port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    props = data_dir / "server.properties"
    props.write_text(_server_properties(port, controller_port, data_dir, secure))
    (data_dir / "log4j.properties").write_text(_LOG4J)
    # A KRaft cluster id is a base64url UUID without padding: generating it here
    # saves one JVM start (StorageTool random-uuid).
    # One in 64 starts with "-", which StorageTool's argument parser takes for an option
    # ("expected one argument"): a broker that failed to start one run in 64. Kafka's own
    # Uuid.randomUuid avoids those too.
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        [
            *_java(data_dir),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(props),
            *(
                arg
                for name, password in (secure.users if secure else {}).items()
                for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
            ),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise BrokerUnavailable(f"kafka StorageTool format failed:\n{fmt.stdout}{fmt.stderr}")
    return _launch(data_dir, port, tied_to_parent=tied_to_parent)


def restart_jar_broker(broker: JarBroker, *, tied_to_parent: bool = True) -> JarBroker:
    """Start a stopped (or killed) broker again on its own data and port: what a broker
    outage looks like to its clients once it ends."""
    return _launch(broker.data_dir, broker.port, tied_to_parent=tied_to_parent)


def _java(data_dir: Path) -> list[str]:
    return [
        "java",
        "-Xmx512m",
        "-Xms128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Dlog4j.configuration=file:{data_dir / 'log4j.properties'}",
        "-cp",
        f"{ensure_jars()}/*",
    ]


def _launch(data_dir: Path, port: int, *, tied_to_parent: bool) -> JarBroker:
    log_file = data_dir / "broker.log"
    log_start = log_file.stat().st_size if log_file.exists() else 0  # a restart appends
    out = log_file.open("ab")
    process = subprocess.Popen(
        [*_java(data_dir), "kafka.Kafka", str(data_dir / "server.properties")],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent if tied_to_parent else None,  # noqa: PLW1509
        start_new_session=not tied_to_parent,
    )
    out.close()
    broker = JarBroker(process, port, data_dir, log_file, log_start)
    try:
        _await_ready(broker)
    except BaseException:
        broker.stop()
        raise
    return broker


def _await_ready(broker: JarBroker) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            raise BrokerUnavailable(
                f"Kafka broker exited with {broker.process.returncode} during start:\n{broker.log_tail()}"
            )
        if READY_LINE.encode() in broker.log_file.read_bytes()[broker.log_start :] and port_open(broker.port):
            return
        # The broker writes its log as it starts; re-reading a small file every 50 ms
        # is an await on that event, not a fixed sleep.
        time.sleep(0.05)
    raise BrokerUnavailable(f"Kafka broker not ready after {START_TIMEOUT_S:.0f}s:\n{broker.log_tail()}")


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM (the broker shuts down cleanly), then SIGKILL if it does not."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


@contextlib.contextmanager
def session_broker() -> Iterator[tuple[str, JarBroker | None]]:
    """A broker for one process's lifetime (tests, demo, benchmarks): yields the
    bootstrap address and, for a jar broker, the handle whose log a failing test prints."""
    external = os.environ.get("TIDAL_KAFKA_BOOTSTRAP")
    if external:
        yield external, None
        return
    if docker_available():
        with _docker_broker() as bootstrap:
            yield bootstrap, None
        return
    data_dir = Path(tempfile.mkdtemp(prefix="tidal-kafka-"))
    broker = start_jar_broker(data_dir, free_port(), tied_to_parent=True)
    try:
        yield broker.bootstrap, broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def _docker_broker() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.waiting_utils import wait_for_logs  # noqa: PLC0415

    port = free_port()
    container = (
        DockerContainer(DOCKER_IMAGE)
        .with_bind_ports(port, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    with container:
        wait_for_logs(container, READY_LINE, timeout=START_TIMEOUT_S)
        yield f"127.0.0.1:{port}"


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    """Create topics (name -> partitions, replication factor 1) on a local broker."""
    from kafka.admin import KafkaAdminClient, NewTopic  # noqa: PLC0415 - only callers with a broker need it

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, count, 1) for name, count in partitions.items()])
    finally:
        admin.close()


def service_topics(bootstrap: str, topic: str, partitions: int) -> None:
    """The input topic, its reply topic (``.acks``) and its DLQ (``.dlq``), as the service uses them."""
    create_topics(bootstrap, {topic: partitions, f"{topic}.acks": partitions, f"{topic}.dlq": 1})


# --- `make kafka-up` / `make kafka-down`: a broker that outlives the command ----------


def _pid_file() -> Path:
    return state_dir() / "broker.pid"


def up(port: int) -> str:
    bootstrap = f"127.0.0.1:{port}"
    if docker_available():
        subprocess.run(
            ["docker", "compose", "up", "-d", "--wait", "kafka", "kafka-init"],
            cwd=ROOT,
            check=True,
            env={**os.environ, "KAFKA_PORT": str(port)},
        )
        return bootstrap
    pid_file = _pid_file()
    if pid_file.exists():
        pid, _, old_port = pid_file.read_text().partition(":")
        if _alive(int(pid)) and port_open(int(old_port)):
            return f"127.0.0.1:{old_port}"  # idempotent: already up
        pid_file.unlink()
    if port_open(port):
        raise BrokerUnavailable(f"Port {port} is taken by another process; choose one with KAFKA_PORT=...")
    data = state_dir() / "data"
    shutil.rmtree(data, ignore_errors=True)
    broker = start_jar_broker(data, port, tied_to_parent=False)
    pid_file.write_text(f"{broker.process.pid}:{port}")
    return bootstrap


def down() -> None:
    if docker_available():
        subprocess.run(["docker", "compose", "down", "-v"], cwd=ROOT, check=True)
        return
    pid_file = _pid_file()
    if not pid_file.exists():
        print("kafka: not running", file=sys.stderr)
        return
    pid = int(pid_file.read_text().partition(":")[0])
    stop_pid(pid)
    pid_file.unlink()
    shutil.rmtree(state_dir() / "data", ignore_errors=True)


def status() -> int:
    pid_file = _pid_file()
    if pid_file.exists():
        pid, _, port = pid_file.read_text().partition(":")
        if _alive(int(pid)) and port_open(int(port)):
            print(f"127.0.0.1:{port}")
            return 0
    print("kafka: not running", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "fetch"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", "9092")))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            started = time.monotonic()
            bootstrap = up(args.port)
            print(
                f"kafka: {bootstrap} (Apache Kafka {KAFKA_VERSION}, ready in {time.monotonic() - started:.1f}s)",
                file=sys.stderr,
            )
            print(bootstrap)
        elif args.command == "down":
            down()
        elif args.command == "fetch":
            print(ensure_jars())
        else:
            return status()
    except BrokerUnavailable as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
