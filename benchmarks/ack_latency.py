"""Send → durable-ack latency through DurableProducer at a steady offered load.

A real broker, the real service (`tidal-consumer run`, once per Kafka backend:
kafka-python and confluent), one DurableProducer on the same backend sending at a fixed
rate (default 5,000 events/s for 30 s, paced in 10 ms ticks, after 5 s of the same load
not measured). Each event's latency is
from just before ``send`` to its future resolving with a durable seq. Prints p50, p95,
p99 and max, and the achieved rate; baseline in the same run, per backend: the plain
Kafka produce round trip (send → broker ack) of the same events through the same client
(consumer.kafka.backends.open_transport), the floor any durable ack sits on. JSON in
benchmarks/results/ack_latency.json.

Run: .venv/bin/python benchmarks/ack_latency.py [--rate 5000] [--seconds 30] [--backends kafka-python,confluent]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_local  # noqa: E402
from results_io import save  # noqa: E402

from consumer.client import DurableProducer  # noqa: E402
from consumer.kafka.backends import open_transport  # noqa: E402

BIN = Path(sys.executable).parent
TICK_S = 0.010
WARMUP_S = 5.0


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summary(latencies: list[float], sent: int, elapsed: float) -> dict:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "events": sent,
        "resolved": len(ms),
        "achieved_rate_per_s": round(sent / elapsed),
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(ms[-1], 2),
    }


def paced(rate: int, seconds: float, send_one: object) -> tuple[int, float]:
    """Call send_one(i) at ``rate`` per second, in 10 ms ticks, for ``seconds``."""
    per_tick = max(1, round(rate * TICK_S))
    ticks = int(seconds / TICK_S)
    started = time.perf_counter()
    sent = 0
    for tick in range(ticks):
        for _ in range(per_tick):
            send_one(sent)  # type: ignore[operator]
            sent += 1
        # Pacing a load generator: wait for the next tick's start time.
        delay = started + (tick + 1) * TICK_S - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return sent, time.perf_counter() - started


def event(i: int, now: int) -> dict:
    return {"entity_id": i, "signal_type": "view", "weight": 1.0, "timestamp_nanos": now + i}


def measure(
    backend: str,
    bootstrap: str,
    workdir: Path,
    rate: int,
    seconds: float,
    now: int,
    env: dict[str, str] | None = None,
) -> dict:
    """The service with ``backend`` on a fresh topic (``env``: more TIDAL_* settings);
    DurableProducer sending at ``rate``."""
    topic = f"lat-{uuid.uuid4().hex[:6]}"
    kafka_local.service_topics(bootstrap, topic, 4)
    log_path = workdir / f"service-{backend}-{topic}.log"
    log = log_path.open("wb")
    service = subprocess.Popen(
        [
            str(BIN / "tidal-consumer"),
            "run",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--group-id",
            f"g-{topic}",
            "--reply-topic",
            f"{topic}.acks",
            "--dlq-topic",
            f"{topic}.dlq",
            "--wal-dir",
            str(workdir / f"wal-{backend}-{topic}"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TIDAL_BACKEND": backend, **(env or {})},
        preexec_fn=kafka_local.die_with_parent,  # noqa: PLW1509
    )
    try:
        with DurableProducer(bootstrap, topic, f"{topic}.acks", ack_timeout=60, backend=backend) as producer:
            # Warm-up, not measured: the first ack also waits for the service's group join;
            # then WARMUP_S at the offered rate (connections, fetch sessions, the broker's
            # and the processes' first allocations), all of it acked before timing starts.
            producer.send_and_wait(event(10**9, now), timeout=60)
            warm: list[object] = []
            paced(rate, WARMUP_S, lambda i: warm.append(producer.send(event(10**9 + 1 + i, now))))
            for future in warm:
                future.result(timeout=60)  # type: ignore[attr-defined]
            latencies: list[float] = []
            failures: list[BaseException] = []
            lock = threading.Lock()
            all_done = threading.Event()
            expected = [0]

            def done(t0: float, future: object) -> None:
                latencies.append(time.perf_counter() - t0)
                if future.exception() is not None:  # type: ignore[attr-defined]
                    failures.append(future.exception())  # type: ignore[attr-defined]
                with lock:
                    if len(latencies) == expected[0]:
                        all_done.set()

            # Futures are not kept: holding 150,000 of them (each with a Condition and locks)
            # would make every full GC pass of this process walk millions of objects, and
            # those pauses would be measured as ack latency.
            def durable_send(i: int) -> None:
                t0 = time.perf_counter()
                producer.send(event(i, now)).add_done_callback(lambda f, t0=t0: done(t0, f))

            sent, elapsed = paced(rate, seconds, durable_send)
            with lock:
                expected[0] = sent
                if len(latencies) == sent:
                    all_done.set()
            if not all_done.wait(timeout=120) or failures:
                raise RuntimeError(f"{len(latencies)} of {sent} resolved; failures: {failures[:3]}")
        durable = summary(latencies, sent, elapsed)
    finally:
        service.terminate()
        service.wait(timeout=60)
        log.close()
        progress = [line for line in log_path.read_text().splitlines() if "events/s=" in line]
        print("service progress lines (last 3):", *progress[-3:], sep="\n  ")
        if os.environ.get("ACKLAT_SHOW_LOG"):
            print(log_path.read_text())
    return durable


def plain_produce(backend: str, bootstrap: str, topic: str, rate: int, seconds: float, now: int) -> dict:
    """The same load sent through ``backend``'s client, timed to each broker ack."""
    transport = open_transport(backend, bootstrap, topic, {})
    latencies: list[float] = []

    def plain_send(i: int) -> None:
        t0 = time.perf_counter()
        transport.send(
            f"{topic}-plain",
            str(i).encode(),
            json.dumps(event(i, now)).encode(),
            lambda *_sent, t0=t0: latencies.append(time.perf_counter() - t0),
            lambda exc: None,
        )

    sent, elapsed = paced(rate, seconds, plain_send)
    transport.flush(None)
    transport.close()
    return summary(latencies, sent, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backends", default="kafka-python,confluent")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="acklat-"))
    with kafka_local.session_broker() as (bootstrap, _broker):
        topic = f"lat-{uuid.uuid4().hex[:6]}"
        kafka_local.service_topics(bootstrap, topic, 4)
        now = time.time_ns()

        baselines = {
            backend: plain_produce(backend, bootstrap, topic, args.rate, min(args.seconds, 10.0), now)
            for backend in args.backends.split(",")
        }
        durable = {
            backend: measure(backend, bootstrap, workdir, args.rate, args.seconds, now)
            for backend in args.backends.split(",")
        }
    shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "offered_rate_per_s": args.rate,
        "seconds": args.seconds,
        "durable_ack": durable,
        "baseline_plain_produce_ack": baselines,
    }
    for backend, figures in durable.items():
        print(
            f"{backend}: offered {args.rate:,}/s for {args.seconds:.0f}s: achieved "
            f"{figures['achieved_rate_per_s']:,}/s, {figures['resolved']:,} of {figures['events']:,} resolved; "
            f"send -> durable ack: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms"
        )
        base = baselines[backend]
        print(
            f"{backend} baseline send -> broker ack (acks=all), same client: p50 {base['p50_ms']} ms, "
            f"p99 {base['p99_ms']} ms, max {base['max_ms']} ms"
        )
    save("ack_latency", results)


if __name__ == "__main__":
    main()
