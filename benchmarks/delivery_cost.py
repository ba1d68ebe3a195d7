"""What delivery = "transactional" costs against the standard delivery (issue #23), on the
confluent backend, at max_poll_records 500 and 5,000.

For each batch size, alternating the two modes in the same run (the baseline is the
standard delivery, measured beside it):
  * durable rate: one topic of N events (default 500,000), the service from its partitions'
    assignment until the group's commits reach the end (benchmarks/e2e_bench.py), store on;
  * ack latency: DurableProducer (confluent) sending at R events/s (default 5,000) for S
    seconds after a warm-up, each event timed from send to its durable seq
    (benchmarks/ack_latency.py).
Prints medians and the transactional/standard ratios; JSON in
benchmarks/results/delivery_cost.json.

Run: .venv/bin/python benchmarks/delivery_cost.py [--events N] [--repeats 3] [--rate 5000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import kafka_local  # noqa: E402
from ack_latency import measure  # noqa: E402
from e2e_bench import PARTITIONS, fill_topic, time_service  # noqa: E402
from results_io import save  # noqa: E402

BACKEND = "confluent"
MODES = ("standard", "transactional")
BATCHES = (500, 5000)


def settings(mode: str, batch: int) -> dict[str, str]:
    return {"TIDAL_DELIVERY": mode, "TIDAL_MAX_POLL_RECORDS": str(batch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="delivery-"))
    rates: dict[tuple[int, str], list[float]] = {(b, m): [] for b in BATCHES for m in MODES}
    latency: dict[tuple[int, str], dict] = {}
    with kafka_local.session_broker() as (bootstrap, _broker):
        topic = f"delivery-{uuid.uuid4().hex[:6]}"
        kafka_local.service_topics(bootstrap, topic, PARTITIONS)
        ends = fill_topic(bootstrap, topic, args.events)
        for run in range(args.repeats):
            for batch in BATCHES:
                for mode in MODES:
                    timing = time_service(BACKEND, bootstrap, topic, ends, workdir, env=settings(mode, batch))
                    rates[(batch, mode)].append(args.events / timing.from_assignment)
                    print(
                        f"run {run + 1} batch {batch:>5} {mode:>13}: {rates[(batch, mode)][-1]:,.0f} ev/s", flush=True
                    )
        now = time.time_ns()
        for batch in BATCHES:
            for mode in MODES:
                latency[(batch, mode)] = measure(
                    BACKEND, bootstrap, workdir, args.rate, args.seconds, now, env=settings(mode, batch)
                )
                found = latency[(batch, mode)]
                print(f"batch {batch:>5} {mode:>13}: ack latency p50 {found['p50_ms']} ms, p99 {found['p99_ms']} ms")
    shutil.rmtree(workdir, ignore_errors=True)
    results: dict = {
        "backend": BACKEND,
        "events": args.events,
        "rate": args.rate,
        "seconds": args.seconds,
        "batches": {},
    }
    for batch in BATCHES:
        medians = {mode: statistics.median(rates[(batch, mode)]) for mode in MODES}
        standard, transactional = latency[(batch, "standard")], latency[(batch, "transactional")]
        results["batches"][str(batch)] = {
            "events_per_s_runs": {mode: [round(r) for r in rates[(batch, mode)]] for mode in MODES},
            "median_events_per_s": {mode: round(medians[mode]) for mode in MODES},
            "rate_ratio_transactional_to_standard": round(medians["transactional"] / medians["standard"], 3),
            "ack_latency": {"standard": standard, "transactional": transactional},
            "p99_ratio_transactional_to_standard": round(transactional["p99_ms"] / standard["p99_ms"], 2),
        }
        row = results["batches"][str(batch)]
        ratio = row["rate_ratio_transactional_to_standard"]
        print(
            f"batch {batch:>5}: median {row['median_events_per_s']['standard']:,} vs "
            f"{row['median_events_per_s']['transactional']:,} ev/s (ratio {ratio}),"
            f" ack p50 {standard['p50_ms']} vs {transactional['p50_ms']} ms, p99 {standard['p99_ms']} vs "
            f"{transactional['p99_ms']} ms"
        )
    save("delivery_cost", results)


if __name__ == "__main__":
    main()
