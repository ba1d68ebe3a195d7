"""`make demo`: the whole service end to end on this machine, then everything stopped.

broker → topics → `tidal-consumer run` → 3,000 sample events through DurableProducer
(some duplicates, some invalid) → acks with durable seqs → DLQ count → SIGTERM →
`tidal-consumer query` (the signal store) → `walcore verify` → broker stopped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import wait
from pathlib import Path

import kafka_local
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from consumer.client import DurableProducer, EventRejected

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WAL_DIR = ROOT / "wal-demo"
TOPIC = "signals"
ACKS, DLQ = f"{TOPIC}.acks", f"{TOPIC}.dlq"  # the names kafka_local.service_topics creates
SIGNALS = ["view", "click", "like", "share", "purchase"]
QUERIED = 42  # the entity the demo queries: it gets a few events of each type below


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    say("starting a local Apache Kafka broker")
    with kafka_local.session_broker() as (bootstrap, _broker):
        print(f"broker at {bootstrap}")
        kafka_local.service_topics(bootstrap, TOPIC, 4)
        print(f"topics: {TOPIC} (4 partitions), {ACKS} (4), {DLQ} (1)")

        shutil.rmtree(WAL_DIR, ignore_errors=True)
        say(f"starting tidal-consumer (WAL in {WAL_DIR.relative_to(ROOT)}/, log in wal-demo.log)")
        log = (ROOT / "wal-demo.log").open("wb")
        metrics_port = kafka_local.free_port()  # the example config's 9400 may be taken on this machine
        service = subprocess.Popen(
            [
                str(BIN / "tidal-consumer"),
                "run",
                "--config",
                str(ROOT / "config" / "consumer.toml"),
                "--bootstrap-servers",
                bootstrap,
                "--wal-dir",
                str(WAL_DIR),
            ],
            env={**os.environ, "TIDAL_METRICS_PORT": str(metrics_port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=kafka_local.die_with_parent,  # noqa: PLW1509
        )
        try:
            code = drive(bootstrap, service)
            show_metrics(metrics_port)
        finally:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
            service.wait(timeout=60)
            log.close()
        if code:
            return code
        print(f"service stopped with exit code {service.returncode} (0 = drained, acked, committed)")
        say(f"tidal-consumer query --entity {QUERIED} (the signal store the WAL was applied into)")
        subprocess.run(
            [str(BIN / "tidal-consumer"), "query", "--entity", str(QUERIED), "--wal-dir", str(WAL_DIR)], check=True
        )
        say(f"walcore verify {WAL_DIR.relative_to(ROOT)}")
        verify = subprocess.run([str(BIN / "walcore"), "verify", str(WAL_DIR)], check=False)
        say("stopping the broker")
    print("done: broker stopped, nothing left running")
    return verify.returncode or service.returncode


def show_metrics(port: int) -> None:
    say(f"a few of the service's metrics (http://127.0.0.1:{port}/metrics) and its readiness (/readyz)")
    wanted = (
        "tidal_events_consumed_total ",
        "tidal_events_stored_total ",
        "tidal_events_duplicate_total ",
        "tidal_wal_last_seq ",
    )
    deadline = time.monotonic() + 5
    while True:  # gauges are sampled about once a second: wait for the WAL's 3,000
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            lines = answer.read().decode().splitlines()
        if "tidal_wal_last_seq 3000.0" in lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for line in lines:
        if line.startswith(wanted) or line.startswith("tidal_events_rejected_total{"):
            print(f"  {line}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
        print(f"  /readyz: {answer.read().decode()}")


def drive(bootstrap: str, service: subprocess.Popen[bytes]) -> int:
    rng = random.Random(7)
    now = time.time_ns()
    events = [
        {
            "entity_id": rng.randrange(1, 10_000),
            "signal_type": rng.choice(SIGNALS),
            "weight": round(rng.uniform(0.1, 5.0), 3),
            "timestamp_nanos": now + i,
            "event_id": f"demo-{i}",
        }
        for i in range(3000)
    ]
    for i, event in enumerate(events[:15]):
        event.update(entity_id=QUERIED, signal_type=SIGNALS[i % 5])
    say("sending 3,000 events, 150 producer retries (same event_id) and 40 unknown signal types")
    started = time.monotonic()
    with DurableProducer(bootstrap, TOPIC, ACKS, ack_timeout=60) as producer:
        futures = [producer.send(e) for e in events]
        retries = [producer.send(events[i]) for i in rng.sample(range(3000), 150)]
        unknown = [producer.send({**events[i], "signal_type": "teleport", "event_id": f"bad-{i}"}) for i in range(40)]
        wait(futures + retries + unknown, timeout=120)
        if service.poll() is not None:
            print(f"the service exited early with {service.returncode}; see wal-demo.log")
            return 1
        results = [f.result(timeout=0) for f in futures]
        dup_results = [f.result(timeout=0) for f in retries]
        rejected = [f.exception(timeout=0) for f in unknown]
    elapsed = time.monotonic() - started
    print(f"all {len(results) + len(dup_results) + len(rejected)} sends resolved in {elapsed:.1f}s")
    seqs = sorted(r.seq for r in results)
    print(f"durable: {len(results)} events, seqs {seqs[0]}..{seqs[-1]} in WAL {results[0].wal_id}")
    print(
        f"   e.g. event demo-0 -> partition {results[0].partition} offset {results[0].offset} -> seq {results[0].seq}"
    )
    assert all(r.duplicate for r in dup_results), "every retry must be flagged duplicate"
    print(
        f"duplicates: {len(dup_results)} retries acked with their original seq "
        f"(e.g. seq {dup_results[0].seq}, duplicate={dup_results[0].duplicate})"
    )
    assert all(isinstance(r, EventRejected) for r in rejected)
    print(f"rejected: {len(rejected)}, e.g. {rejected[0].reason!r}")

    say("and 10 messages that are not signal events at all (sent with a plain producer)")
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(10):
        raw.send(TOPIC, value=b"{not json" if i % 2 else json.dumps({"entity_id": -i}).encode())
    raw.flush()
    raw.close()

    say("the reply topic (two ack messages as they are on the wire)")
    acks = read_all(bootstrap, ACKS, lambda msgs: sum(len(json.loads(m.value)["rejected"]) for m in msgs) >= 50)
    for message in acks[:2]:
        text = message.value.decode()
        print(f"  key={message.key.decode()} value={text[:150]}{'...' if len(text) > 150 else ''}")
    print(f"{len(acks)} ack messages in all")
    dlq = read_all(bootstrap, DLQ, lambda msgs: len(msgs) >= 50)
    reasons = sorted({dict(m.headers)["tidal.reason"].decode().split(" (")[0] for m in dlq})
    print(f"DLQ: {len(dlq)} messages; reasons: {reasons}")
    say("stopping the service with SIGTERM (drain, ack, commit, close the WAL)")
    return 0


def read_all(bootstrap: str, topic: str, done: object, timeout: float = 60) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    messages: list = []
    deadline = time.monotonic() + timeout
    while not done(messages) and time.monotonic() < deadline:  # type: ignore[operator]
        for batch in consumer.poll(timeout_ms=200).values():
            messages.extend(batch)
    consumer.close()
    return messages


if __name__ == "__main__":
    sys.exit(main())
