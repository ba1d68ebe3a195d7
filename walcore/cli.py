"""``walcore verify|dump|stats DIR``: inspect a WAL without changing it.

Exit codes: 0 clean, 1 damaged (the message names file and byte offset; a torn tail,
which opening the WAL would cut, counts as damage), 2 usage, or a directory or entry that
cannot be read (one line, the system's reason).
Read-only and lock-free, so it may run beside a live writer (whose in-progress tail
may then show as torn).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from walcore.errors import WalCorruption
from walcore.replay import replay_log
from walcore.scan import LogScan, scan_log
from walcore.wal import read_wal_id


def _scan(directory: Path) -> LogScan:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    read_wal_id(directory)  # damage to the identity is damage too
    return scan_log(directory)


def cmd_verify(directory: Path) -> int:
    scan = _scan(directory)
    events = scan.next_seq - scan.first_seq
    if scan.torn is not None:
        print(f"DAMAGED: {scan.torn.describe()}; opening the WAL cuts it (keeping a .broken copy)", file=sys.stderr)
        return 1
    print(
        f"OK: {len(scan.segments)} segment(s), {scan.frame_count} frame(s), {events} event(s), "
        f"seqs {scan.first_seq}..{scan.next_seq - 1}, every BLAKE3 digest verified"
    )
    return 0


def cmd_dump(directory: Path, from_seq: int, as_json: bool) -> int:
    scan = _scan(directory)
    out = sys.stdout
    # The whole log is verified first, so damage anywhere prints nothing but the error.
    # Voided events are printed too, marked: dump shows what is on disk.
    for seq, record in replay_log(directory, from_seq, scan.next_seq - 1):
        source = record.source
        voided = seq in scan.voided
        row = {
            "seq": seq,
            "entity_id": record.entity_id,
            "signal_type": record.signal_type,
            "weight": record.weight,
            "timestamp_nanos": record.timestamp_nanos,
            "event_id": record.event_id,
            "source": None
            if source is None
            else {"topic": source.topic, "partition": source.partition, "offset": source.offset},
            "voided": voided,
        }
        if as_json:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        else:
            where = "-" if source is None else f"{source.topic}:{source.partition}@{source.offset}"
            out.write(
                f"{seq}\t{record.entity_id}\t{record.signal_type}\t{record.weight!r}\t"
                f"{record.timestamp_nanos}\t{record.event_id or '-'}\t{where}"
                f"{chr(9) + 'VOIDED' if voided else ''}\n"
            )
    if scan.torn is not None:
        print(f"warning: stopped at {scan.torn.describe()}", file=sys.stderr)
        return 1
    return 0


def cmd_stats(directory: Path, as_json: bool) -> int:
    scan = _scan(directory)
    stats = {
        "wal_id": read_wal_id(directory),
        "segments": len(scan.segments),
        "bytes": sum(s.valid_end for s in scan.segments),
        "frames": scan.frame_count,
        # frames per format version: after an upgrade a log holds both until truncated
        "format_versions": dict(
            sorted(Counter(str(header.version) for segment in scan.segments for _, header in segment.frames).items())
        ),
        "events": scan.next_seq - scan.first_seq,
        "voided": len(scan.voided),  # events a void entry took out of the live ones (invariant 7)
        "first_seq": scan.first_seq,
        "last_seq": scan.next_seq - 1,
        "checkpoint": scan.checkpoint,
        "torn_tail": None if scan.torn is None else scan.torn.describe(),
        "partitions": {f"{t}:{p}": off for (t, p), off in sorted(scan.sources.last_offsets().items())},
    }
    if as_json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            print(f"{key}: {value}")
    return 0 if scan.torn is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="walcore", description="Inspect a tidal WAL directory.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check every frame; exit 0 clean, 1 damaged")
    verify.add_argument("directory", type=Path)
    dump = sub.add_parser("dump", help="print every event (one JSON object per line with --json)")
    dump.add_argument("directory", type=Path)
    dump.add_argument("--from-seq", type=int, default=1)
    dump.add_argument("--json", action="store_true")
    stats = sub.add_parser("stats", help="segments, events, seqs, checkpoint, partitions, format versions")
    stats.add_argument("directory", type=Path)
    stats.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            return cmd_verify(args.directory)
        if args.command == "dump":
            return cmd_dump(args.directory, args.from_seq, args.json)
        return cmd_stats(args.directory, args.json)
    except WalCorruption as exc:
        print(f"DAMAGED: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped early (`walcore dump DIR | head`): not an error
        # Python flushes stdout once more at exit; point it at /dev/null so that flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # not there, not a directory, unreadable, an entry that is a directory...
        print(f"walcore: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
