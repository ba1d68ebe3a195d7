"""How cost grows: events/s and peak RSS for 1, 8 and 64 input partitions, and for 1, 2
and 3 instances of one group, per Kafka backend.

For each shape, one topic holding N events (default 300,000), then, alternating in the
same run: the bare client consuming it + json.loads (the baseline), and the service (or
k services of one group) to its last committed offset, store included. Rates are from
the partitions' assignment (benchmarks/e2e_bench.py explains why); peak RSS is the
largest VmHWM of any one process (a service, or its store's applier). This machine has
2 cores shared with the broker: read the instance rows as "what a second and third
process cost here", not as what a second machine would give (docs/performance.md).
JSON: benchmarks/results/scaling_bench.json.

Run: .venv/bin/python benchmarks/scaling_bench.py [--events N] [--backends kafka-python,confluent]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import kafka_local  # noqa: E402
from e2e_bench import BACKENDS, fill_topic, time_raw, time_service  # noqa: E402
from results_io import save  # noqa: E402

SHAPES = [
    ("partitions", 1, 1),
    ("partitions", 8, 1),
    ("partitions", 64, 1),
    ("instances", 12, 1),
    ("instances", 12, 2),
    ("instances", 12, 3),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    backends = args.backends.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="scaling-"))
    rows = []
    with kafka_local.session_broker() as (bootstrap, _broker):
        topics: dict[int, tuple[str, dict[int, int]]] = {}
        for _, partitions, _ in SHAPES:
            if partitions in topics:
                continue
            topic = f"scale{partitions}-{uuid.uuid4().hex[:6]}"
            kafka_local.create_topics(bootstrap, {topic: partitions, f"{topic}.dlq": 1})
            topics[partitions] = (topic, fill_topic(bootstrap, topic, args.events, partitions))
        for what, partitions, instances in SHAPES:
            topic, ends = topics[partitions]
            for backend in backends:
                bare = time_raw(backend, bootstrap, topic, args.events)
                started = time.perf_counter()
                service = time_service(backend, bootstrap, topic, ends, workdir, instances=instances)
                row = {
                    "shape": what,
                    "partitions": partitions,
                    "instances": instances,
                    "backend": backend,
                    "bare_events_per_s": round(args.events / bare.from_assignment),
                    "service_events_per_s": round(args.events / service.from_assignment),
                    "ratio": round(bare.from_assignment / service.from_assignment, 3),
                    "peak_rss_mib": round(service.peak_rss / 2**20, 1),
                    "wall_s": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(
                    f"{partitions:>3} partitions, {instances} instance(s), {backend:>12}: service "
                    f"{row['service_events_per_s']:>8,} ev/s (bare {row['bare_events_per_s']:,}, ratio "
                    f"{row['ratio']}), peak RSS {row['peak_rss_mib']} MiB",
                    flush=True,
                )
    shutil.rmtree(workdir, ignore_errors=True)
    save("scaling_bench", {"events": args.events, "rows": rows})


if __name__ == "__main__":
    main()
