"""The ack protocol (docs/acks.md): one message per source partition per WAL batch.

Key ``"<topic>:<partition>"``; value (JSON)::

    {"v": 1, "wal_id": "...", "topic": "...", "partition": p,
     "acked": [[first_offset, last_offset, first_seq], ...],
     "duplicates": [[offset, original_seq], ...],
     "rejected": [[offset, "reason"], ...]}

Every consumed offset of the batch is in exactly one list (a rejected record is not in
the WAL, so the three lists partition the offsets). An ``acked`` run maps
consecutive offsets to consecutive seqs; a Kafka redelivery is acked again there with
its original seq. ``duplicates`` are producer retries (same event_id or content).
Pure: outcomes in, (key, value) bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from walcore import AppendResult

ACK_VERSION = 1


def build_ack(wal_id: str, topic: str, partition: int, offsets: Sequence[int], results: Sequence[AppendResult],
              *, rejected: Sequence[tuple[int, str]]) -> tuple[bytes, bytes]:
    """The ack of one partition's share of a batch.

    ``offsets[i]`` was stored (or recognised) as ``results[i]``; ``rejected`` lists
    (offset, reason) of what went to the DLQ. Offsets ascend, as Kafka delivers them.
    """
    acked: list[list[int]] = []
    duplicates: list[list[int]] = []
    count = len(results)
    if (count and offsets[-1] - offsets[0] == count - 1
            and [r[0] for r in results] == list(range(results[0][0], results[0][0] + count))
            and not any(r[1] and not r[2] for r in results)):
        # The common case in O(1) lists: consecutive offsets stored as consecutive seqs.
        acked.append([offsets[0], offsets[-1], results[0][0]])
    else:
        for offset, (seq, duplicate, redelivery) in zip(offsets, results):
            if duplicate and not redelivery:
                duplicates.append([offset, seq])
                continue
            last = acked[-1] if acked else None
            if last is not None and offset == last[1] + 1 and seq == last[2] + offset - last[0]:
                last[1] = offset
            else:
                acked.append([offset, offset, seq])
    value = {"v": ACK_VERSION, "wal_id": wal_id, "topic": topic, "partition": partition,
             "acked": acked, "duplicates": duplicates, "rejected": [[o, r] for o, r in rejected]}
    return f"{topic}:{partition}".encode(), json.dumps(value, separators=(",", ":")).encode()


def parse_ack(value: bytes) -> dict:
    """Decode and shape-check an ack message value (used by DurableProducer)."""
    ack = json.loads(value)
    if not isinstance(ack, dict) or ack.get("v") != ACK_VERSION:
        raise ValueError(f"not a version-{ACK_VERSION} ack: {value[:80]!r}")
    return ack
