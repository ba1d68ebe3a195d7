"""The ack protocol (docs/acks.md): one message per source partition per WAL batch.

Key ``"<topic>:<partition>"``; value (JSON)::

    {"v": 1, "wal_id": "...", "topic": "...", "partition": p,
     "acked": [[first_offset, last_offset, first_seq], ...],
     "duplicates": [[offset, original_seq], ...],
     "rejected": [[offset, "reason"], ...]}

Every consumed offset of the batch is in exactly one list. An ``acked`` run maps
consecutive offsets to consecutive seqs; a Kafka redelivery is acked again there with
its original seq. ``duplicates`` are producer retries (same event_id or content).
Pure: outcomes in, (key, value) bytes out.
"""

from __future__ import annotations

import json
from typing import NamedTuple

ACK_VERSION = 1


class Outcome(NamedTuple):
    """What became of one consumed record: kind is "acked", "duplicate" or "rejected"."""

    topic: str
    partition: int
    offset: int
    kind: str
    seq: int = 0
    reason: str = ""


def build_acks(wal_id: str, outcomes: list[Outcome]) -> list[tuple[bytes, bytes]]:
    """Group outcomes per partition (offset order) into compact ack messages."""
    by_partition: dict[tuple[str, int], list[Outcome]] = {}
    for outcome in outcomes:
        by_partition.setdefault((outcome.topic, outcome.partition), []).append(outcome)
    messages = []
    for (topic, partition), items in by_partition.items():
        items.sort(key=lambda o: o.offset)
        acked: list[list[int]] = []
        duplicates: list[list[int]] = []
        rejected: list[list[int | str]] = []
        for item in items:
            if item.kind == "acked":
                last = acked[-1] if acked else None
                if last is not None and item.offset == last[1] + 1 and item.seq == last[2] + item.offset - last[0]:
                    last[1] = item.offset
                else:
                    acked.append([item.offset, item.offset, item.seq])
            elif item.kind == "duplicate":
                duplicates.append([item.offset, item.seq])
            else:
                rejected.append([item.offset, item.reason])
        value = {"v": ACK_VERSION, "wal_id": wal_id, "topic": topic, "partition": partition,
                 "acked": acked, "duplicates": duplicates, "rejected": rejected}
        messages.append((f"{topic}:{partition}".encode(), json.dumps(value, separators=(",", ":")).encode()))
    return messages


def parse_ack(value: bytes) -> dict:
    """Decode and shape-check an ack message value (used by DurableProducer)."""
    ack = json.loads(value)
    if not isinstance(ack, dict) or ack.get("v") != ACK_VERSION:
        raise ValueError(f"not a version-{ACK_VERSION} ack: {value[:80]!r}")
    return ack
