"""What Kafka transactions would cost per batch (issue #11 weighed them for the handoff).

Per batch, as the service commits one: 4 acks (one per partition) then the offsets, in
two ways against the same broker, alternating blocks of 50 batches:
  (1) baseline, what the service does: send the acks (acks=all), flush, then a
      synchronous offset commit;
  (2) transactional: begin, send the acks, send_offsets_to_transaction, commit.
Prints the median and p99 milliseconds per batch of each and the ratio; JSON in
benchmarks/results/txn_cost.json.

Run: .venv/bin/python benchmarks/txn_cost.py [--batches N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_local  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.structs import OffsetAndMetadata, TopicPartition  # noqa: E402
from results_io import save  # noqa: E402

PARTITIONS = 4
ACK = (
    b'{"v":1,"wal_id":"0123456789abcdef","topic":"in","partition":0,"acked":[[0,1249,1]],"duplicates":[],"rejected":[]}'
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    with kafka_local.session_broker() as (bootstrap, _broker):
        name = f"txn-{uuid.uuid4().hex[:6]}"
        kafka_local.create_topics(bootstrap, {name: PARTITIONS, f"{name}.acks": PARTITIONS})
        group = f"{name}-group"
        plain = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        txn = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, transactional_id=f"{name}-txn")
        txn.init_transactions()
        committer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        partitions = [TopicPartition(name, p) for p in range(PARTITIONS)]
        timings: dict[str, list[float]] = {"plain": [], "transactional": []}
        offset = 0
        for block in range(args.batches // 50):
            for kind in ("plain", "transactional") if block % 2 == 0 else ("transactional", "plain"):
                for _ in range(50):
                    offset += 1250
                    offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp in partitions}
                    started = time.perf_counter()
                    if kind == "plain":
                        for p in range(PARTITIONS):
                            plain.send(f"{name}.acks", key=f"in:{p}".encode(), value=ACK)
                        plain.flush()
                        committer.commit(offsets)
                    else:
                        txn.begin_transaction()
                        for p in range(PARTITIONS):
                            txn.send(f"{name}.acks", key=f"in:{p}".encode(), value=ACK)
                        txn.send_offsets_to_transaction(offsets, group)
                        txn.commit_transaction()
                    timings[kind].append((time.perf_counter() - started) * 1000)
        plain.close()
        txn.close()
        committer.close(autocommit=False)
    results = {
        kind: {
            "batches": len(values),
            "median_ms": round(statistics.median(values), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
        }
        for kind, values in timings.items()
    }
    results["ratio_median_transactional_over_plain"] = round(
        results["transactional"]["median_ms"] / results["plain"]["median_ms"], 2
    )
    for kind in ("plain", "transactional"):
        print(f"{kind:>13}: median {results[kind]['median_ms']:.2f} ms/batch, p99 {results[kind]['p99_ms']:.2f} ms")
    print(f"ratio (transactional / plain, medians): {results['ratio_median_transactional_over_plain']}")
    save("txn_cost", results)


if __name__ == "__main__":
    main()
