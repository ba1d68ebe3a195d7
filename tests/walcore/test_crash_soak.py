"""Real crashes: a writer process SIGKILLed at random moments, over and over, on one WAL.

The recovery tests build each kind of damage byte by byte; this one lets the kernel
decide where a write stops. A child process appends batches (some through
``append_batch``, some as single appends from threads) and prints each batch's seqs
only after the call returned, i.e. after the fdatasync. The parent kills it after a
random number of acknowledged batches, reopens the WAL, and checks the invariants: it
opens (a torn tail is cut), the seqs are 1..last gap-free, and every acknowledged
record is there, byte for byte as it was appended. Then the next child continues on
the same WAL. Bounded in CI (``ROUNDS``); ``TIDAL_SOAK=1`` (``make soak``) runs 200 rounds.

What it covers: a process dying at any point of the writer's work (between batches,
mid-encode, mid-write, mid-fsync, mid-rotation), and the lock, seqs, dedup and source
indexes of the next open. What it cannot cover: a SIGKILL does not lose what write()
already put in the page cache, so it does not tear frames; power-loss tears are built
byte by byte in test_recovery.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from walcore import EventRecord, SourcePosition, Wal

pytestmark = pytest.mark.soak

ROUNDS = 200 if os.environ.get("TIDAL_SOAK") == "1" else 6

CHILD = textwrap.dedent("""
    import sys, threading
    from tests.walcore.test_crash_soak import batch
    from walcore import Wal, WalConfig

    round_no = int(sys.argv[2])
    with Wal.open(sys.argv[1], WalConfig(segment_size=256 * 1024, batch_timeout=0.002)) as wal:
        for number in range(10**9):
            records = batch(round_no, number)
            if number % 3 == 2:  # single appends from four threads, then wait for all
                futures = {}
                def send(indexes):
                    for i in indexes:
                        futures[i] = wal.append(records[i])
                threads = [threading.Thread(target=send, args=(range(k, len(records), 4),)) for k in range(4)]
                for t in threads: t.start()
                for t in threads: t.join()
                seqs = {i: f.result().seq for i, f in futures.items()}
            else:
                seqs = dict(enumerate(r.seq for r in wal.append_batch(records)))
            # printed only now: every seq on this line is durable
            print(number, *(f"{i}:{seq}" for i, seq in sorted(seqs.items())), flush=True)
""")


def batch(round_no: int, number: int) -> list[EventRecord]:
    """The records of batch ``number`` of round ``round_no``: reproducible, all distinct."""
    rng = random.Random(round_no * 1_000_003 + number)
    size = rng.choice([1, 2, 7, 50, 300, 1200])
    return [
        EventRecord(
            rng.getrandbits(64),
            rng.randrange(2**16),
            rng.uniform(-1e6, 1e6),
            rng.getrandbits(64),
            f"r{round_no}-b{number}-{i}" if rng.random() < 0.5 else None,
            SourcePosition(f"t{round_no}", number % 4, number * 2000 + i),
        )
        for i in range(size)
    ]


def test_sigkill_at_random_moments_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    rng = random.Random(20261124)
    acknowledged: dict[int, EventRecord] = {}
    for round_no in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(wal_dir), str(round_no)],
            cwd=Path(__file__).parents[2],  # `python -c` imports from its directory: the tests package
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        wanted = rng.randint(1, 12)  # acknowledged batches before the kill
        for _ in range(wanted):
            line = child.stdout.readline()
            assert line, f"round {round_no}: the writer died on its own:\n{child.stderr.read()}"  # type: ignore[union-attr]
            number, *pairs = line.split()
            records = batch(round_no, int(number))
            assert len(pairs) == len(records)
            for pair in pairs:
                index, seq = map(int, pair.split(":"))
                assert acknowledged.setdefault(seq, records[index]) == records[index], f"seq {seq} given twice"
        child.send_signal(signal.SIGKILL)  # mid-append, mid-fsync or between: the kernel decides
        child.wait()
        child.stdout.close()
        child.stderr.close()  # type: ignore[union-attr]

        with Wal.open(wal_dir) as wal:
            replayed = dict(wal.replay())
        assert sorted(replayed) == list(range(1, len(replayed) + 1)), f"round {round_no}: seqs not gap-free"
        missing = [seq for seq in acknowledged if seq not in replayed]
        assert not missing, f"round {round_no}: acknowledged seqs lost: {missing[:10]}"
        changed = [seq for seq, record in acknowledged.items() if replayed[seq] != record]
        assert not changed, f"round {round_no}: acknowledged records changed at seqs {changed[:10]}"
