"""End to end: the service versus raw kafka-python consumption of the same topic.

One topic of 4 partitions holding N events (default 500,000), then, alternating, in
the same run and each a fresh process with a fresh consumer group:
  (1) baseline: raw kafka-python KafkaConsumer + json.loads of every value, nothing else;
  (2) tidal-consumer run: decode + validate + dedup + WAL fsync + acks + commit, timed
      until the group's committed offsets reach the end of every partition.
Both are timed from process launch, so both pay interpreter start-up and the group join.
Prints medians and the ratio (2)/(1) of events/s; JSON in benchmarks/results/e2e_bench.json.

Run: .venv/bin/python benchmarks/e2e_bench.py [--events N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_local  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402
from results_io import save  # noqa: E402

BIN = Path(sys.executable).parent
PARTITIONS = 4


def raw_consumer(bootstrap: str, topic: str, events: int) -> None:
    """Child mode: the baseline consumer. Prints nothing; exits when all are decoded."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=5000)
    seen = 0
    loads = json.loads
    while seen < events:
        for messages in consumer.poll(timeout_ms=200).values():
            for message in messages:
                loads(message.value)
            seen += len(messages)
    consumer.close(autocommit=False)


def fill_topic(bootstrap: str, topic: str, events: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1)
    now = time.time_ns()
    signals = ["view", "click", "like", "share", "purchase"]
    for i in range(events):
        value = (f'{{"entity_id":{i * 7919 % 1_000_003},"signal_type":"{signals[i % 5]}",'
                 f'"weight":{1 + i % 9}.5,"timestamp_nanos":{now + i}}}').encode()
        producer.send(topic, value=value, partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def time_raw(bootstrap: str, topic: str, events: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child-raw", bootstrap, topic, str(events)], check=True)
    return time.perf_counter() - started


def time_service(bootstrap: str, topic: str, ends: dict[int, int], workdir: Path) -> float:
    group = f"svc-{uuid.uuid4().hex[:8]}"
    wal_dir = workdir / group
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    log = (workdir / f"{group}.log").open("wb")
    started = time.perf_counter()
    service = subprocess.Popen(
        [str(BIN / "tidal-consumer"), "run", "--bootstrap-servers", bootstrap, "--topic", topic,
         "--group-id", group, "--reply-topic", f"{topic}.acks", "--dlq-topic", f"{topic}.dlq",
         "--wal-dir", str(wal_dir)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TIDAL_METRICS_INTERVAL_S": "5"},
        preexec_fn=kafka_local.die_with_parent)  # noqa: PLW1509
    try:
        while True:
            done = all((watcher.committed(tp) or 0) >= ends[tp.partition] for tp in partitions)
            elapsed = time.perf_counter() - started
            if done:
                break
            if service.poll() is not None:
                raise RuntimeError(f"service exited {service.returncode}: {(workdir / f'{group}.log').read_text()}")
            time.sleep(0.02)  # polling the broker's committed offsets: the event we await
    finally:
        service.terminate()
        service.wait(timeout=60)
        log.close()
        watcher.close(autocommit=False)
        shutil.rmtree(wal_dir, ignore_errors=True)
    return elapsed


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-raw":
        raw_consumer(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="e2e-"))
    with kafka_local.session_broker() as (bootstrap, _broker):
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        kafka_local.service_topics(bootstrap, topic, PARTITIONS)
        started = time.perf_counter()
        fill_topic(bootstrap, topic, args.events)
        print(f"filled {topic} with {args.events:,} events in {time.perf_counter() - started:.1f}s")
        probe = KafkaConsumer(bootstrap_servers=bootstrap)
        ends = {tp.partition: off for tp, off in probe.end_offsets(
            [TopicPartition(topic, p) for p in range(PARTITIONS)]).items()}
        probe.close()
        raw_times, service_times = [], []
        for run in range(args.repeats):
            raw_times.append(time_raw(bootstrap, topic, args.events))
            service_times.append(time_service(bootstrap, topic, ends, workdir))
            print(f"run {run + 1}: raw {args.events / raw_times[-1]:,.0f} ev/s, "
                  f"service {args.events / service_times[-1]:,.0f} ev/s")
    shutil.rmtree(workdir, ignore_errors=True)
    raw_rate = args.events / statistics.median(raw_times)
    service_rate = args.events / statistics.median(service_times)
    results = {
        "events": args.events, "partitions": PARTITIONS,
        "raw_kafka_python_json": {"runs_s": [round(t, 2) for t in raw_times], "median_events_per_s": round(raw_rate)},
        "service_end_to_end": {"runs_s": [round(t, 2) for t in service_times],
                               "median_events_per_s": round(service_rate)},
        "ratio_service_over_raw": round(service_rate / raw_rate, 3),
    }
    print(f"raw kafka-python + json.loads: median {raw_rate:,.0f} events/s")
    print(f"tidal-consumer end to end:     median {service_rate:,.0f} events/s (to the last committed offset)")
    print(f"ratio (service / raw): {results['ratio_service_over_raw']}")
    save("e2e_bench", results)


if __name__ == "__main__":
    main()
