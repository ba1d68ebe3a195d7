"""walcore throughput and recovery, on the real file system with real fdatasyncs.

Measures (medians of repeated runs; the machine is shared and noisy):
  * durable append_batch events/s at batch sizes 100, 1000, 5000 (one caller);
  * durable append events/s from 8 threads;
  * open + recovery time of a ~1 GiB log (every frame's BLAKE3 verified, indexes rebuilt).
Baseline in the same run: raw os.write + os.fdatasync of the same frame bytes, i.e. what
the disk allows with no Python work per event. Results: benchmarks/results/wal_bench.json.

Run: .venv/bin/python benchmarks/wal_bench.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from results_io import save

from walcore import EventRecord, SourcePosition, Wal, WalConfig
from walcore.format import encode_body, encode_frame


def make_batches(batch: int, count: int, start: int) -> list[list[EventRecord]]:
    """Distinct Kafka-like events: 4 partitions, consecutive offsets, no two alike."""
    rng = random.Random(start)
    now = time.time_ns()
    batches = []
    offset = start
    for b in range(count):
        partition = b % 4
        batches.append(
            [
                EventRecord(
                    rng.getrandbits(63),
                    rng.randrange(1, 6),
                    rng.random() * 5,
                    now + offset + i,
                    None,
                    SourcePosition("signals", partition, offset + i),
                )
                for i in range(batch)
            ]
        )
        offset += batch
    return batches


def freeze_inputs() -> None:
    # The input pool is long-lived: leave it out of GC passes, as the service does with
    # its own start-up state (consumer.service). What is measured is the WAL's work.
    gc.collect()
    gc.freeze()


def bench_append_batch(directory: Path, batch: int, events: int, repeats: int) -> dict:
    rates = []
    for r in range(repeats):
        batches = make_batches(batch, max(1, events // batch), start=r * 10_000_000)
        freeze_inputs()
        wal_dir = directory / f"batch{batch}-{r}"
        with Wal.open(wal_dir, WalConfig()) as wal:
            started = time.perf_counter()
            for records in batches:
                wal.append_batch(records)
            elapsed = time.perf_counter() - started
        rates.append(len(batches) * batch / elapsed)
        gc.unfreeze()
        del batches
        shutil.rmtree(wal_dir)
    return {
        "batch": batch,
        "events_per_run": events,
        "runs": [round(x) for x in rates],
        "median_events_per_s": round(statistics.median(rates)),
    }


def bench_raw_fsync(directory: Path, batch: int, events: int, repeats: int) -> dict:
    """Baseline: the same frames written and fdatasynced with no per-event Python work."""
    frames = [encode_frame(encode_body(b), 1, 0) for b in make_batches(batch, max(1, events // batch), 0)]
    rates = []
    for r in range(repeats):
        path = directory / f"raw-{batch}-{r}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        started = time.perf_counter()
        for frame in frames:
            os.write(fd, frame)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - started
        os.close(fd)
        path.unlink()
        rates.append(len(frames) * batch / elapsed)
    return {"batch": batch, "median_events_per_s": round(statistics.median(rates))}


def bench_threads(directory: Path, threads: int, per_thread: int, repeats: int) -> dict:
    rates = []
    for r in range(repeats):
        pools = [make_batches(per_thread, 1, start=(r * threads + t) * 1_000_000)[0] for t in range(threads)]
        freeze_inputs()
        wal_dir = directory / f"threads-{r}"
        with Wal.open(wal_dir, WalConfig()) as wal:
            barrier = threading.Barrier(threads + 1)

            def work(records: list[EventRecord], barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                futures = [wal.append(record) for record in records]
                for future in futures:
                    future.result()

            workers = [threading.Thread(target=work, args=(pool,)) for pool in pools]
            for worker in workers:
                worker.start()
            barrier.wait()
            started = time.perf_counter()
            for worker in workers:
                worker.join()
            elapsed = time.perf_counter() - started
        rates.append(threads * per_thread / elapsed)
        gc.unfreeze()
        shutil.rmtree(wal_dir)
    return {
        "threads": threads,
        "per_thread": per_thread,
        "runs": [round(x) for x in rates],
        "median_events_per_s": round(statistics.median(rates)),
    }


def bench_recovery(directory: Path, target_bytes: int, repeats: int) -> dict:
    wal_dir = directory / "recovery"
    written = 0
    start = 0
    with Wal.open(wal_dir, WalConfig()) as wal:
        while written < target_bytes:
            for records in make_batches(5000, 20, start):
                wal.append_batch(records)
            start += 100_000
            written = sum(p.stat().st_size for p in wal_dir.glob("*.wal"))
        events = wal.last_seq
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        wal = Wal.open(wal_dir, WalConfig())
        times.append(time.perf_counter() - started)
        assert wal.last_seq == events
        wal.close()
    shutil.rmtree(wal_dir)
    return {
        "log_bytes": written,
        "events": events,
        "segments": -(-written // WalConfig().segment_size),
        "runs_s": [round(t, 3) for t in times],
        "median_open_s": round(statistics.median(times), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="walbench-", dir=args.dir))
    repeats = 3 if args.quick else 5
    events = 100_000 if args.quick else 500_000
    try:
        results = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "dir": str(directory)},
            "append_batch": [
                bench_append_batch(directory, b, events if b > 100 else events // 5, repeats) for b in (100, 1000, 5000)
            ],
            "raw_write_fdatasync_baseline": [
                bench_raw_fsync(directory, b, events if b > 100 else events // 5, repeats) for b in (100, 1000, 5000)
            ],
            "append_8_threads": bench_threads(directory, 8, 5_000 if args.quick else 25_000, repeats),
            "recovery": bench_recovery(directory, (64 if args.quick else 1024) * 1024 * 1024, 3),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for row, raw in zip(results["append_batch"], results["raw_write_fdatasync_baseline"]):
        print(
            f"append_batch batch={row['batch']:>5}: median {row['median_events_per_s']:>10,} durable events/s "
            f"(raw write+fdatasync of the same frames: {raw['median_events_per_s']:,}/s; ratio "
            f"{row['median_events_per_s'] / raw['median_events_per_s']:.2f})"
        )
    t = results["append_8_threads"]
    print(f"append from {t['threads']} threads: median {t['median_events_per_s']:,} durable events/s")
    rec = results["recovery"]
    print(
        f"open+recovery of {rec['log_bytes'] / 2**30:.2f} GiB ({rec['events']:,} events): "
        f"median {rec['median_open_s']} s"
    )
    save("wal_bench", results)


if __name__ == "__main__":
    main()
