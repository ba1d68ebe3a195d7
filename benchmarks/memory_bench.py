"""Memory of the WAL's in-memory indexes: RSS per million events for each kind of key.

Each case is a fresh process that opens a WAL (window large enough to keep every key),
appends 1,000,000 distinct events in batches of 5,000, and reports the growth of its RSS:
  content   no event id: the dedup key is the 26-byte row (the baseline of this run)
  id16      16-character event ids (kept as they are)
  id256     256-character ASCII event ids (keyed by a 19-byte digest)
  emoji256  256-emoji event ids, 1 KB of UTF-8 each (digest)
  gapped    no event id, and a skipped offset after every event: one source run each
Prints MiB per million events and the ratio to the baseline; JSON in
benchmarks/results/memory_bench.json.

Run: .venv/bin/python benchmarks/memory_bench.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from results_io import save  # noqa: E402

CASES = ["content", "id16", "id256", "emoji256", "gapped"]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def child(case: str, events: int) -> None:
    import gc

    from walcore import EventRecord, SourcePosition, Wal, WalConfig

    def event_id(i: int) -> str | None:
        if case == "id16":
            return f"{i:016d}"
        if case == "id256":
            return f"{i:016d}" + "x" * 240
        if case == "emoji256":
            return f"{i:016d}" + "😀" * 240
        return None

    step = 2 if case == "gapped" else 1
    with tempfile.TemporaryDirectory() as directory, Wal.open(directory, WalConfig(dedup_max_keys=4 * events)) as wal:
        gc.collect()
        before = rss_bytes()
        for start in range(0, events, 5000):
            wal.append_batch(
                [
                    EventRecord(i, 1, 1.0, i, event_id(i), SourcePosition("t", 0, i * step))
                    for i in range(start, min(events, start + 5000))
                ]
            )
        gc.collect()
        print(json.dumps({"case": case, "rss_growth": rss_bytes() - before}))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for case in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, str(args.events)], capture_output=True, text=True, check=True
        )
        growth = json.loads(out.stdout.strip().splitlines()[-1])["rss_growth"]
        results[case] = {"mib_per_million_events": round(growth / 2**20 * 1_000_000 / args.events, 1)}
    baseline = results["content"]["mib_per_million_events"]
    for case, figures in results.items():
        figures["ratio_to_content_keys"] = round(figures["mib_per_million_events"] / baseline, 2)
        print(
            f"{case:>9}: {figures['mib_per_million_events']:7.1f} MiB per million events "
            f"(x{figures['ratio_to_content_keys']} the content-key baseline)"
        )
    save("memory_bench", {"events": args.events, "cases": results})


if __name__ == "__main__":
    main()
