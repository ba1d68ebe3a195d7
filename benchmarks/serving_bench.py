"""Serving: what the query API answers in, and what the top-k index costs the applier.

1. The index's cost, same run: the store_bench stream (N events over ~N entities, batches
   of 5,000, a flush every 20) applied with the ``top`` index and without it (its
   maintenance replaced by a no-op), alternating, ROUNDS each; wall time and process CPU
   through the writer's close. Median events/s each way and their ratio, and the ratio
   of the median CPU time an event.
2. One instance over HTTP: a server process (the service's own HTTP server and store
   reader, a RocksDB secondary) on the full store; a client process asks for random
   entities (GET /v1/entities/{id}) and for top-100 of a signal type (GET /v1/top), one
   request at a time, a new connection each (as SignalClient does). p50/p99.
3. Fan-out: the same events split over three stores (three server processes), asked
   through SignalClient (every store, answers merged; top-k exact: consumer.serving.client),
   against SignalClient on the one full store: what the fan-out adds, p99. Three
   placements: ``keyed_unmoved``, the service's own shape (producers key by entity, so an
   entity's events are in one of 12 partitions, its key's murmur2 mod 12, 4 a store),
   ``keyed`` (the same, two partitions moving to another store half way through the
   stream, so their entities' events are in two stores) and ``round_robin``, batches dealt
   round robin over the stores (every busy entity in all three: the worst case for the
   group top-k's stopping rule). Each store carries the placement record its applier
   would keep; the keyed ones are asked again by stores answering without it (``_blind``:
   the group top-k before placement), and the unmoved keyed split by ``_cold`` stores too
   (each answer the first since the store's view moved: no top list kept from the last,
   as while the applier writes), against a cold store alone; the skewed one also ``writing``:
   each store's own writer process applying WRITE_RATE events/s (keyed to its partitions)
   while it is asked, each query at its own now, against a copy of the one store with a
   writer of its own (the readers catch up as the service's do). Two streams: the flat one above
   (weights 1-9, no decay: thousands of entities tie at the k-th score) and a skewed one
   (Zipf-popular entities, events spread over 24 h: the shape of real traffic), where the
   entity asked is a random one of the distinct entities, and the most popular entity's
   answer time is timed apart (its window counts read every one of its events). The
   placement record's own cost to the applier (observing each batch) is timed apart too.

Every timed series (Q entity queries, Q/5 top-100s; 20 where a top-k reads most of each
store) follows WARM_UP untimed queries, and every store is written out (sync) once built.

JSON: benchmarks/results/serving_bench.json. Run:
    .venv/bin/python benchmarks/serving_bench.py [--events N] [--queries Q] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import http.client
import itertools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_local  # noqa: E402
import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from results_io import save  # noqa: E402
from store_bench import BATCH, Stream, apply_stream, stream  # noqa: E402

import walcore.storage.store as store_module  # noqa: E402
from consumer.config import Settings  # noqa: E402
from consumer.kafka.partitioning import entity_key_hashes  # noqa: E402
from consumer.ops.health import Endpoints, Health  # noqa: E402
from consumer.protocol.placement import Held, encode, observe  # noqa: E402
from consumer.serving import SignalClient  # noqa: E402
from consumer.serving.api import QueryApi  # noqa: E402
from consumer.serving.reader import StoreReader  # noqa: E402
from walcore.format import CONTENT_KEY  # noqa: E402
from walcore.storage.rocks import RocksEngine  # noqa: E402
from walcore.storage.store import WAL_ROW, SignalStore  # noqa: E402

SCHEMA = Settings().signal_schema()
TOP_K = 100
PARTITIONS = 12
MOVED = {3: 1, 7: 2}  # partition -> the store it moves to half way through the stream
WARM_UP = 20  # untimed queries before each timed series
WRITE_RATE, WRITE_EVERY_S = 1_000, 0.05  # events/s each store's writer applies in the ``writing`` series


def placed(events: Stream, placement: str) -> list[tuple[Stream, bytes]]:
    """The stream's events split over three stores: ``round_robin`` by batch, or by the
    entity's partition (its key's murmur2 mod PARTITIONS, as Kafka's default partitioner
    puts DurableProducer's events; store = partition // 4): ``keyed_unmoved`` so, ``keyed``
    with MOVED's partitions on their new store from the middle batch on. Each store numbers
    its events from 1 and gets the placement record its applier would keep."""
    shares: list[list[tuple[bytes, bytes, int]]] = [[], [], []]
    held: list[Held | None] = [{}, {}, {}]
    seqs = [0, 0, 0]
    middle = len(events.batches) // 2
    for n, (_, raw, _) in enumerate(events.batches):
        rows = np.frombuffer(raw, WAL_ROW)
        partitions = entity_key_hashes(rows["entity"]) % PARTITIONS
        if placement == "round_robin":
            owners = np.full(len(rows), n % 3)
        else:
            owners = partitions // 4
            for partition, store in MOVED.items():
                if placement == "keyed" and n >= middle:
                    owners[partitions == partition] = store
        for store in range(3):
            mine = rows[owners == store]
            if len(mine):
                numbers = np.arange(seqs[store] + 1, seqs[store] + len(mine) + 1, dtype=np.int64)
                seqs[store] += len(mine)
                shares[store].append((numbers.tobytes(), mine.tobytes(), seqs[store]))
                theirs = partitions[owners == store]
                for partition in np.unique(theirs).tolist():
                    runs = [("signals", partition, int((theirs == partition).sum()))]
                    held[store] = observe(held[store], runs, mine["entity"][theirs == partition])
    return [(Stream(batches, events.entities), encode(record)) for batches, record in zip(shares, held)]


def placement_cost(events: Stream) -> float:
    """CPU µs per event of the applier's placement record: each batch's entities observed
    per source partition (a batch's records come grouped by partition, as the service
    plans them)."""
    batches = []
    for _, raw, _ in events.batches:
        entities = np.frombuffer(raw, WAL_ROW)["entity"]
        partitions = entity_key_hashes(entities) % PARTITIONS
        order = np.argsort(partitions, kind="stable")
        counts = np.bincount(partitions, minlength=PARTITIONS)
        batches.append(([("signals", p, int(c)) for p, c in enumerate(counts.tolist()) if c], entities[order]))
    held: Held | None = {}
    started = time.process_time()
    for runs, entities in batches:
        held = observe(held, runs, entities)
    return round((time.process_time() - started) * 1e6 / len(events.entities), 3)


def skewed_stream(events: int) -> Stream:
    """Zipf(1.2)-popular entities out of 1,000,000, one signal type an event in turn,
    weight 1, timestamps over the last 24 hours (so decay orders them too)."""
    rng = np.random.default_rng(5)
    entities = ((rng.zipf(1.2, events) - 1) % 1_000_000).tolist()
    now = time.time_ns()
    stamps = (now - rng.integers(0, 24 * 3600 * 10**9, events)).tolist()
    batches = []
    for first in range(0, events, BATCH):
        positions = range(first, min(events, first + BATCH))
        seqs = np.arange(first + 1, positions[-1] + 2, dtype=np.int64)
        rows = b"".join(CONTENT_KEY.pack(entities[i], 1 + i % 5, 1.0, stamps[i]) for i in positions)
        batches.append((seqs.tobytes(), rows, int(seqs[-1])))
    return Stream(batches, entities)


def build(
    directory: Path, events: Stream, *, index: bool, wal_id: str = "bench", placement: bytes | None = None
) -> tuple[float, float]:
    """Apply ``events`` into a new store at ``directory`` (with the ``placement`` record);
    (wall s, CPU s) through the close."""
    ranked = store_module._rerank  # the index's whole maintenance: a no-op for the baseline
    if not index:
        store_module._rerank = lambda *_args, **_kwargs: None
    try:
        store = SignalStore(RocksEngine(directory), SCHEMA)
        store.follow(wal_id, events.batches[-1][2])
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        apply_stream(store, events, placement)
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        store_module._rerank = ranked
        # The kernel's writeback of the new store (hundreds of MB) would otherwise run
        # through the queries timed next: written out here, outside every timing.
        os.sync()


class _Blind(StoreReader):
    """A store that answers without its placement record: the group top-k as before it."""

    def top(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**super().top(*args, **kwargs), "placement": None}


class _Cold(StoreReader):
    """A store whose every answer is the first since its view moved: no top list kept from
    the last one (as just after a catch-up, while the applier writes)."""

    def top(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with self._view.reading():
            self._store.refresh()
        return super().top(*args, **kwargs)


READERS: dict[str, type[StoreReader]] = {"placed": StoreReader, "blind": _Blind, "cold": _Cold}


def serve(store_dir: Path, port: int, wal_id: str, kind: str) -> None:
    """The server process: the service's HTTP server and store reader, nothing else."""
    reader = READERS[kind](store_dir, SCHEMA, wal_id, lambda: 0, lambda: [])
    endpoints = Endpoints("127.0.0.1", port, Health(60.0), CollectorRegistry(), QueryApi(lambda: reader))
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes it
    endpoints.close()
    reader.close()


def write(store_dir: Path, wal_id: str, part: int) -> None:
    """The writer process: the store's applier, applying about WRITE_RATE Zipf-popular events
    a second (time-stamped 2 s ago) in batches every WRITE_EVERY_S, keyed to ``part``'s
    partitions (-1: any), with the store's placement record kept as it is (still true)."""
    store = SignalStore(RocksEngine(store_dir), SCHEMA)
    store.follow(wal_id, 2**62)
    record = store.placement()
    rng = np.random.default_rng(part + 11)
    batch, seq = round(WRITE_RATE * WRITE_EVERY_S), store.applied_seq
    print("ready", flush=True)
    for n in itertools.count(1):
        entities = ((rng.zipf(1.2, batch * 3) - 1) % 1_000_000).astype(np.uint64)
        if part >= 0:  # about a third of them
            entities = entities[entity_key_hashes(entities) % PARTITIONS // 4 == part]
        entities = entities[:batch]
        rows = np.zeros(len(entities), WAL_ROW)
        rows["entity"], rows["signal"], rows["weight"] = entities, 1 + np.arange(len(entities)) % 5, 1.0
        rows["timestamp"] = time.time_ns() - 2 * 10**9
        seqs = np.arange(seq + 1, seq + len(entities) + 1, dtype=np.int64)
        store.apply_rows(seqs.tobytes(), rows.tobytes(), seq + len(entities), record)
        seq += len(entities)
        if n % 20 == 0:
            store.flush()
        time.sleep(WRITE_EVERY_S)


def start_writer(store_dir: Path, wal_id: str, part: int) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--write", str(store_dir), "--wal-id", wal_id, "--part", str(part)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def start_server(store_dir: Path, wal_id: str, kind: str = "placed") -> tuple[subprocess.Popen[str], int]:
    port = kafka_local.free_port()
    command = [sys.executable, __file__, "--serve", str(store_dir), "--port", str(port), "--wal-id", wal_id]
    process = subprocess.Popen(
        [*command, "--reader", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process, port


def _stop(process: subprocess.Popen[str]) -> None:
    """A server reads its stdin until closed; a writer runs until killed."""
    if process.stdin is not None:
        process.stdin.close()
    else:
        process.kill()
    process.wait(timeout=60)


def _stop_last(processes: list[subprocess.Popen[str]], count: int) -> None:
    """Stop the ``count`` processes started last, and forget them."""
    for process in processes[-count:]:
        _stop(process)
    del processes[-count:]


def timed(ask: Callable[[], object], count: int) -> dict[str, float]:
    """p50 and p99 of ``count`` calls, after WARM_UP untimed ones (a server's first answers
    read its files into the page cache and walk each top list once; the ``cold`` readers
    time the walk on every answer)."""
    for _ in range(min(count, WARM_UP)):
        ask()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        ask()
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


def http_get(port: int, target: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        return body
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--wal-id", help=argparse.SUPPRESS)
    parser.add_argument("--reader", choices=sorted(READERS), help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.wal_id, args.reader)
        return
    if args.write:
        write(args.write, args.wal_id, args.part)
        return
    events = stream(args.events)
    print(f"{args.events:,} events over {len(set(events.entities)):,} entities, batches of {BATCH:,}")
    results: dict = {"events": args.events, "entities": len(set(events.entities)), "queries": args.queries}
    workdir = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    servers: list[subprocess.Popen[str]] = []
    try:
        rates: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for round_ in range(args.rounds):
            for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                directory = workdir / f"store-{mode}-{round_}"
                wall, seconds = build(directory, events, index=mode == "on")
                rates[mode].append(args.events / wall)
                cpu[mode].append(seconds * 1e6 / args.events)
                print(f"  apply, index {mode:>3}: {args.events / wall:,.0f} events/s, {cpu[mode][-1]:.2f} us CPU/event")
                if not (mode == "on" and round_ == 0):
                    shutil.rmtree(directory)
        results["apply"] = {
            mode: {
                "events_per_s_median": round(statistics.median(rates[mode])),
                "cpu_us_per_event_median": round(statistics.median(cpu[mode]), 2),
            }
            for mode in rates
        }
        results["apply"]["rate_on_over_off"] = round(
            statistics.median(rates["on"]) / statistics.median(rates["off"]), 3
        )
        # The same ratio from CPU time an event: what the applier's rate is where it has a
        # core to itself, and less moved by the other work of a shared machine than wall time.
        results["apply"]["cpu_rate_on_over_off"] = round(
            statistics.median(cpu["off"]) / statistics.median(cpu["on"]), 3
        )
        print(
            f"apply rate, index on / off: {results['apply']['rate_on_over_off']} "
            f"(from CPU time an event: {results['apply']['cpu_rate_on_over_off']})"
        )
        results["apply"]["placement_cpu_us_per_event"] = placement_cost(events)
        cost = results["apply"]["placement_cpu_us_per_event"]
        print(f"  the placement record (the applier's observe of each batch): {cost} us CPU/event")

        full = workdir / "store-on-0"
        one, one_port = start_server(full, "full")
        servers.append(one)
        one_cold, one_cold_port = start_server(full, "full", "cold")
        servers.append(one_cold)
        rng = random.Random(3)
        at = time.time_ns()
        single = {
            "entity": timed(
                lambda: http_get(one_port, f"/v1/entities/{rng.choice(events.entities)}?at={at}"), args.queries
            ),
            "top100": timed(
                lambda: http_get(one_port, f"/v1/top?signal={rng.choice(list(SCHEMA.by_name))}&k={TOP_K}&at={at}"),
                args.queries // 5,
            ),
            "top100_cold": timed(
                lambda: http_get(one_cold_port, f"/v1/top?signal={rng.choice(list(SCHEMA.by_name))}&k={TOP_K}&at={at}"),
                args.queries // 5,
            ),
        }
        results["one_instance_http"] = single
        print(
            f"one instance over HTTP, {results['entities']:,} entities: entity {single['entity']}, "
            f"top-{TOP_K} {single['top100']}, the first after a view moved {single['top100_cold']}"
        )

        fan: dict = {}
        # This process holds the streams (millions of objects): left to the collector, its
        # full passes land inside the timed client calls (tens of ms). An application's own
        # heap is its own business; here it is set aside for every measurement alike.
        gc.freeze()
        for shape, shaped in (("flat", events), ("skewed", skewed_stream(args.events))):
            full_dir = full if shape == "flat" else workdir / "skewed-full"
            if shape == "skewed":
                build(full_dir, shaped, index=True)
                process, port = start_server(full_dir, "full-skewed")
                cold, cold_port = start_server(full_dir, "full-skewed", "cold")
                servers += [process, cold]
                whole, whole_cold = [f"127.0.0.1:{port}"], [f"127.0.0.1:{cold_port}"]
            else:
                whole, whole_cold = [f"127.0.0.1:{one_port}"], [f"127.0.0.1:{one_cold_port}"]
            now = time.time_ns()  # after every event of the stream: the usual "now" query
            distinct = sorted(set(shaped.entities))  # a random entity, not a random event's
            fan[shape] = {}

            def measure(peers: list[str], tops: int, e: list[int] = distinct, t: int | None = now) -> dict:
                """``t`` None: each query at its own now (after the events a writer adds)."""
                with SignalClient(peers) as client:
                    return {
                        "entity": timed(lambda: client.entity(rng.choice(e), at_ns=t), args.queries),
                        "top100": timed(lambda: client.top(rng.choice(list(SCHEMA.by_name)), TOP_K, at_ns=t), tops),
                    }

            fan[shape]["one_store"] = measure(whole, args.queries // 5)
            fan[shape]["one_store_cold"] = measure(whole_cold, args.queries // 5)
            for placement in ("keyed_unmoved", "keyed", "round_robin"):
                for part, (share, record) in enumerate(placed(shaped, placement)):
                    build(
                        workdir / f"{shape}-{placement}-{part}",
                        share,
                        index=True,
                        wal_id=f"part{part}",
                        placement=record,
                    )
                # Round robin: every partition in every store, so placement rules nothing out.
                # Cold: every answer the first since its view moved, against one cold store.
                # Writing (skewed): each store's applier writing WRITE_RATE events/s while asked,
                # against a copy of the one store with its own writer.
                sights = {"keyed_unmoved": ("placed", "cold", "blind"), "keyed": ("placed", "blind")}
                if shape == "skewed":
                    sights["keyed_unmoved"] += ("writing",)
                for sight in sights.get(placement, ("placed",)):
                    parts = []
                    for part in range(3):
                        part_dir = workdir / f"{shape}-{placement}-{part}"
                        if sight == "writing":
                            servers.append(start_writer(part_dir, f"part{part}", part))
                        process, port = start_server(part_dir, f"part{part}", "placed" if sight == "writing" else sight)
                        servers.append(process)
                        parts.append(f"127.0.0.1:{port}")
                    # Without placement the flat stream's ties make every group top-k read
                    # most of each store (s each).
                    slow = shape == "flat" and (sight == "blind" or placement != "keyed_unmoved")
                    tops = 20 if slow else args.queries // 5
                    name = placement if sight == "placed" else f"{placement}_{sight}"
                    three = fan[shape][name] = measure(parts, tops, t=None if sight == "writing" else now)
                    if sight == "writing":
                        _stop_last(servers, 6)  # three writers and their servers
                        copy = workdir / "skewed-full-writing"
                        shutil.copytree(full_dir, copy)
                        servers.append(start_writer(copy, "bench", -1))
                        process, port = start_server(copy, "full-skewed")
                        servers.append(process)
                        fan[shape]["one_store_writing"] = measure([f"127.0.0.1:{port}"], tops, t=None)
                    baseline = {"cold": "one_store_cold", "writing": "one_store_writing"}.get(sight, "one_store")
                    one_store = fan[shape][baseline]
                    three["added_p99_ms"] = {
                        what: round(three[what]["p99_ms"] - one_store[what]["p99_ms"], 3)
                        for what in ("entity", "top100")
                    }
                    print(f"SignalClient, {shape} scores, {name}: one store {one_store}; three stores {three}")
                    _stop_last(servers, 2 if sight == "writing" else 3)
            # Window counts are counted from an entity's events: the most popular one's
            # answer reads every event of it in its widest window.
            if shape == "skewed":
                hottest, count = Counter(shaped.entities).most_common(1)[0]
                with SignalClient(whole) as client:
                    ask = lambda c=client, e=hottest, t=now: c.entity(e, at_ns=t)  # noqa: E731
                    fan[shape]["hottest_entity"] = {"events": count, **timed(ask, 20)}
        results["fan_out_signal_client"] = fan
    finally:
        for process in servers:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
    save("serving_bench", results)


if __name__ == "__main__":
    main()
