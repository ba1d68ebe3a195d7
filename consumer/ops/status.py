"""``tidal-consumer status``: lag at a glance. Per input partition: the group's committed
offset, the end offset, the lag; and the WAL's last seq and the age of its newest event.
Read-only and lock-free on the WAL (it may run beside the service); joins no group."""

from __future__ import annotations

import time
from typing import Any

from consumer.config import Settings
from consumer.kafka import backends
from walcore.scan import scan_log

# How long status waits for the broker's answers (metadata, offsets).
TIMEOUT_S = 30.0


def gather(settings: Settings) -> dict[str, Any]:
    """Through the configured backend (its options, its security settings), joining no group."""
    client = backends.connect(settings, client_id="tidal-status", group_instance_id=None)
    try:
        partitions = [(topic, p) for topic in settings.topics for p in client.partitions(topic, TIMEOUT_S)]
        ends = client.watermarks(partitions) if partitions else {}
        commits = client.committed(partitions, TIMEOUT_S) if partitions else {}
        rows = []
        for partition in partitions:
            commit, end = commits.get(partition), ends[partition][1]
            committed = commit[0] if commit else None
            rows.append(
                {
                    "topic": partition[0],
                    "partition": partition[1],
                    "committed": committed,
                    "end": end,
                    "lag": end - (committed or 0),
                }
            )
    finally:
        client.close()
    wal: dict[str, Any] = {"dir": str(settings.wal_dir), "last_seq": None, "newest_event_age_s": None}
    if settings.wal_dir.is_dir():
        scan = scan_log(settings.wal_dir)
        wal["last_seq"] = scan.next_seq - 1
        newest = max((header.batch_ts for segment in scan.segments[-1:] for _, header in segment.frames), default=None)
        if newest is not None:
            wal["newest_event_age_s"] = round(time.time() - newest / 1e9, 1)
    return {"group_id": settings.group_id, "partitions": rows, "total_lag": sum(r["lag"] for r in rows), "wal": wal}


def render(status: dict[str, Any]) -> str:
    lines = [f"group {status['group_id']}", f"{'partition':<32} {'committed':>12} {'end':>12} {'lag':>10}"]
    for row in status["partitions"]:
        committed = "-" if row["committed"] is None else str(row["committed"])
        lines.append(
            f"{row['topic'] + ':' + str(row['partition']):<32} {committed:>12} {row['end']:>12} {row['lag']:>10}"
        )
    wal = status["wal"]
    lines.append(
        f"total lag {status['total_lag']}; WAL {wal['dir']}: last seq {wal['last_seq']}, newest event "
        f"{wal['newest_event_age_s']} s old"
    )
    return "\n".join(lines)
