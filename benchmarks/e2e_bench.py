"""End to end, per Kafka backend: the service versus bare consumption of the same topic.

One topic of 4 partitions holding N events (default 1,000,000), then, alternating, in the
same run, each a fresh process with a fresh consumer group, for each backend
(kafka-python, confluent = librdkafka):
  (1) baseline: the bare client consuming in a group + json.loads of every value, nothing
      else (confluent with fetch.queue.backoff.ms lowered, as the service sets it);
  (2) tidal-consumer run with that backend: decode + validate + dedup + WAL fsync + acks
      + commit + the store's applier, until the group's committed offsets reach the end of
      every partition (--compare-store: also without the store, for the applier's cost).
      The applier's backlog (WAL last seq - store's durable seq, from each instance's
      /metrics, the store flushed every 0.25 s) is read when ingest is done, then until it
      is zero: how long after ingest the store held every event, and the applied rate.
Each is timed two ways: from process launch (interpreter start-up and group join
included), and from its partitions' assignment (the steady durable rate: the figure the
targets are about, since start-up is a fixed cost that shrinks with N). Prints medians and
ratios; JSON in benchmarks/results/e2e_bench.json.

Run: .venv/bin/python benchmarks/e2e_bench.py [--events N] [--repeats R] [--backends kafka-python,confluent]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_local  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from kafka import KafkaConsumer  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from results_io import save  # noqa: E402

BIN = Path(sys.executable).parent
PARTITIONS = 4
BACKENDS = ("kafka-python", "confluent")


def raw_consumer(backend: str, bootstrap: str, topic: str, events: int) -> None:
    """Child mode: a baseline consumer. Prints {"assigned": t} when its partitions are
    assigned; exits when all events are decoded."""
    group = f"raw-{uuid.uuid4().hex[:8]}"
    loads = json.loads
    seen = 0
    if backend == "confluent":
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.queue.backoff.ms": 10,
            }
        )
        consumer.subscribe([topic], on_assign=lambda _c, _p: print(json.dumps({"assigned": time.time()}), flush=True))
        while seen < events:
            messages = consumer.consume(5000, 0.2)
            for message in messages:
                loads(message.value())
            seen += len(messages)
        consumer.close()
        return
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    class Announce(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: object) -> None:
            pass

        def on_partitions_assigned(self, assigned: object) -> None:
            print(json.dumps({"assigned": time.time()}), flush=True)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=5000,
    )
    consumer.subscribe([topic], listener=Announce())
    while seen < events:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                loads(record.value)
            seen += len(records)
    consumer.close(autocommit=False)


def fill_topic(bootstrap: str, topic: str, events: int, partitions: int = PARTITIONS) -> dict[int, int]:
    """Write ``events`` signal events round-robin over the partitions; each partition's end
    offset afterwards (what a run waits for the group's commits to reach)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 512 * 1024, "acks": 1})
    now = time.time_ns()
    signals = ["view", "click", "like", "share", "purchase"]
    for i in range(events):
        value = (
            f'{{"entity_id":{i * 7919 % 1_000_003},"signal_type":"{signals[i % 5]}",'
            f'"weight":{1 + i % 9}.5,"timestamp_nanos":{now + i}}}'
        ).encode()
        while True:
            try:
                producer.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    ends = probe.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    probe.close()
    return {tp.partition: offset for tp, offset in ends.items()}


class Timing:
    """One run: seconds from launch, and from the partitions' assignment, to done; for the
    service, also from SIGTERM to its exit (``stop_s``: the drain and shutdown), and with a
    store, the applier's backlog at done (events) and when it had none left (s after done)."""

    def __init__(
        self,
        launched: float,
        assigned: float,
        done: float,
        stop_s: float | None = None,
        peak_rss: int = 0,
        backlog: int | None = None,
        caught_up: float | None = None,
    ) -> None:
        self.from_launch = done - launched
        self.from_assignment = done - assigned
        self.stop_s = stop_s
        self.peak_rss = peak_rss  # bytes: the largest of the processes' peaks (each instance + its applier)
        self.backlog_at_done = backlog
        self.caught_up_s = None if caught_up is None else caught_up - done


def time_raw(backend: str, bootstrap: str, topic: str, events: int) -> Timing:
    launched = time.time()
    out = subprocess.run(
        [sys.executable, __file__, "--child-raw", backend, bootstrap, topic, str(events)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    done = time.time()
    assigned = json.loads(out.splitlines()[0])["assigned"]
    return Timing(launched, assigned, done)


_ASSIGNED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO consumer\.service: partitions assigned", re.MULTILINE
)


def peak_rss(pid: int) -> int:
    """The peak resident size (VmHWM) of a process and of each child it has, the largest."""
    peaks = []
    for each in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        peaks += [int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return max(peaks, default=0)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


_SEQ_GAUGES = ("tidal_wal_last_seq", "tidal_store_applied_seq")


def store_backlog(ports: list[int]) -> int | None:
    """Events the instances' WALs hold and their stores do not yet hold durably (their
    /metrics gauges, sampled each second); None until every instance has both gauges."""
    total = 0
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        gauges = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in _SEQ_GAUGES
        }
        if len(gauges) < len(_SEQ_GAUGES):
            return None
        total += int(gauges["tidal_wal_last_seq"]) - int(gauges["tidal_store_applied_seq"])
    return total


def time_service(
    backend: str,
    bootstrap: str,
    topic: str,
    ends: dict[int, int],
    workdir: Path,
    store: bool = True,
    instances: int = 1,
    env: dict[str, str] | None = None,
) -> Timing:
    """``instances`` services of one group, from launch until the group's commits reach
    ``ends``; the assignment time is the first instance's first. ``env``: more TIDAL_*
    settings for the services."""
    group = f"svc-{uuid.uuid4().hex[:8]}"
    # A reply topic of its own: it is the group's ack history, and a new group reading
    # another's acks there would take them as first homes and re-ack instead of storing.
    reply = f"{topic}.acks.{group}"
    kafka_local.create_topics(bootstrap, {reply: PARTITIONS})
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(ends)]
    logs = [workdir / f"{group}-{n}.log" for n in range(instances)]
    handles = [path.open("wb") for path in logs]
    ports = [kafka_local.free_port() for _ in range(instances)]
    launched = time.time()
    services = [
        subprocess.Popen(
            [
                str(BIN / "tidal-consumer"),
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
                f"{topic}.dlq",
                "--wal-dir",
                str(workdir / f"{group}-{n}"),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "TIDAL_METRICS_INTERVAL_S": "5",
                "TIDAL_BACKEND": backend,
                "TIDAL_METRICS_PORT": str(port),
                "TIDAL_STORE__ENABLED": "true" if store else "false",
                "TIDAL_STORE__FLUSH_INTERVAL_S": "0.25",
                **(env or {}),
            },
            preexec_fn=kafka_local.die_with_parent,  # noqa: PLW1509
        )
        for n, (handle, port) in enumerate(zip(handles, ports))
    ]
    peak, backlog, caught_up = 0, None, None

    def check_running() -> None:
        for service, path in zip(services, logs):
            if service.poll() is not None:
                raise RuntimeError(f"service exited {service.returncode}: {path.read_text()}")

    try:
        while True:
            done = all((watcher.committed(tp) or 0) >= ends[tp.partition] for tp in partitions)
            finished = time.time()
            peak = max([peak, *(peak_rss(service.pid) for service in services)])
            if done:
                break
            check_running()
            time.sleep(0.02)  # polling the broker's committed offsets: the event we await
        if store:
            backlog = store_backlog(ports)
            while (left := store_backlog(ports)) != 0:  # the gauges, sampled each second: what we await
                check_running()
                if time.time() - finished > 600:
                    raise RuntimeError(f"the applier still has {left} events to apply 10 minutes after ingest")
                time.sleep(0.05)
            caught_up = time.time()
    finally:
        terminated = time.time()
        for service in services:
            service.terminate()
        for service in services:
            service.wait(timeout=600)
        stopped = time.time()
        for handle in handles:
            handle.close()
        watcher.close(autocommit=False)
        for n in range(instances):
            shutil.rmtree(workdir / f"{group}-{n}", ignore_errors=True)
    # The services' logs stamp their own lines (local time, ms): the first assignment.
    stamps = [match.group(1) for path in logs if (match := _ASSIGNED.search(path.read_text()))]
    if not stamps:
        raise RuntimeError(f"no assignment in the service logs: {logs[0].read_text()}")
    assigned = min(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in stamps)
    return Timing(launched, assigned, finished, stopped - terminated, peak, backlog, caught_up)


def rates(events: int, timings: list[Timing]) -> dict:
    launch = [t.from_launch for t in timings]
    steady = [t.from_assignment for t in timings]
    stops = [t.stop_s for t in timings if t.stop_s is not None]
    return {
        "runs_from_launch_s": [round(t, 2) for t in launch],
        "runs_from_assignment_s": [round(t, 2) for t in steady],
        **({"runs_sigterm_to_exit_s": [round(t, 2) for t in stops]} if stops else {}),
        "median_events_per_s_from_launch": round(events / statistics.median(launch)),
        "median_events_per_s_from_assignment": round(events / statistics.median(steady)),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-raw":
        raw_consumer(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--compare-store",
        action="store_true",
        help="also run each service with [store] enabled = false: the applier's cost",
    )
    args = parser.parse_args()
    backends = args.backends.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="e2e-"))
    raw: dict[str, list[Timing]] = {b: [] for b in backends}
    service: dict[str, list[Timing]] = {b: [] for b in backends}
    no_store: dict[str, list[Timing]] = {b: [] for b in backends}
    with kafka_local.session_broker() as (bootstrap, _broker):
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        kafka_local.service_topics(bootstrap, topic, PARTITIONS)
        started = time.perf_counter()
        ends = fill_topic(bootstrap, topic, args.events)
        print(f"filled {topic} with {args.events:,} events in {time.perf_counter() - started:.1f}s")
        for run in range(args.repeats):
            for backend in backends:
                raw[backend].append(time_raw(backend, bootstrap, topic, args.events))
                service[backend].append(time_service(backend, bootstrap, topic, ends, workdir))
                if args.compare_store:
                    no_store[backend].append(time_service(backend, bootstrap, topic, ends, workdir, store=False))
                    print(
                        f"run {run + 1} {backend:>12}: service without the store "
                        f"{args.events / no_store[backend][-1].from_assignment:,.0f} ev/s",
                        flush=True,
                    )
                last = service[backend][-1]
                print(
                    f"run {run + 1} {backend:>12}: bare {args.events / raw[backend][-1].from_assignment:,.0f} "
                    f"ev/s, service {args.events / last.from_assignment:,.0f} ev/s, store backlog at done "
                    f"{last.backlog_at_done} events, none left {last.caught_up_s:.1f} s later, SIGTERM to exit "
                    f"{last.stop_s:.1f}s "
                    f"(from assignment; from launch: {args.events / raw[backend][-1].from_launch:,.0f} / "
                    f"{args.events / service[backend][-1].from_launch:,.0f})",
                    flush=True,
                )
    shutil.rmtree(workdir, ignore_errors=True)
    results: dict = {"events": args.events, "partitions": PARTITIONS, "backends": {}}
    for backend in backends:
        bare, svc = rates(args.events, raw[backend]), rates(args.events, service[backend])
        ratio = {
            when: round(svc[f"median_events_per_s_from_{when}"] / bare[f"median_events_per_s_from_{when}"], 3)
            for when in ("assignment", "launch")
        }
        results["backends"][backend] = {
            "bare_consumption_json_loads": bare,
            "service_end_to_end": svc,
            "ratio_service_over_bare": ratio,
        }
        if args.compare_store:
            without = rates(args.events, no_store[backend])
            cost = round(svc["median_events_per_s_from_assignment"] / without["median_events_per_s_from_assignment"], 3)
            backlog = statistics.median(t.backlog_at_done or 0 for t in service[backend])
            lag = statistics.median(t.caught_up_s or 0.0 for t in service[backend])
            applied = round(
                args.events / statistics.median(t.from_assignment + (t.caught_up_s or 0.0) for t in service[backend])
            )
            results["backends"][backend].update(
                service_without_store=without,
                ratio_with_over_without_store=cost,
                store_backlog_at_done_events=[t.backlog_at_done for t in service[backend]],
                store_caught_up_after_done_s=[round(t.caught_up_s or 0.0, 2) for t in service[backend]],
                store_applied_events_per_s_at_least=applied,
            )
            print(
                f"{backend}: without the store median {without['median_events_per_s_from_assignment']:,} ev/s; "
                f"with / without = {cost}; the applier's backlog at done {backlog:,.0f} events (median), none "
                f"left {lag:.1f} s later (the gauges: each second): it applied >= {applied:,} ev/s (ingest "
                f"{svc['median_events_per_s_from_assignment']:,})"
            )
        print(
            f"{backend}: bare + json.loads median {bare['median_events_per_s_from_assignment']:,} ev/s, "
            f"service median {svc['median_events_per_s_from_assignment']:,} ev/s, ratio {ratio['assignment']} "
            f"(from launch: {bare['median_events_per_s_from_launch']:,} / "
            f"{svc['median_events_per_s_from_launch']:,}, ratio {ratio['launch']})"
        )
    save("e2e_bench", results)


if __name__ == "__main__":
    main()
