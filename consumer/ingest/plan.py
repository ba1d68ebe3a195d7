"""The batch core: one poll in, a plan out; the WAL's results in, acks out.

Pure (h11's lesson): plain values in and out, no I/O, no Kafka client, no clock, so
every rule here is tested with literal bytes and no broker. The service's I/O step
(consumer.ingest.steps) sends what the plan says, submits the plan's records to the WAL,
and hands the plan's offsets to the commit step (consumer.ingest.commits).

What a plan guarantees (ARCHITECTURE invariant 2): every polled offset is in exactly
one share's ``offsets`` (sent to the WAL: it comes back stored, a duplicate or a
redelivery) or ``rejected`` (sent to the DLQ, with a dead letter for each), and the
offsets to commit are one past the last polled offset of each partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple, Protocol

from consumer.protocol.acks import Ack, Stored, build_ack
from consumer.protocol.dlq import MAX_DEAD_LETTER_BYTES, DeadLetter, dead_letter
from consumer.protocol.events import Decoder, Rejected
from consumer.protocol.types import Poll
from walcore import AppendResult, EventRecord


@dataclass(slots=True)
class Share:
    """One partition's part of a batch."""

    topic: str
    partition: int
    first: int  # index of its first record in BatchPlan.records
    offsets: list[int]  # the offsets of its records sent to the WAL, in order
    rejected: list[tuple[int, str]]  # (offset, reason) of those sent to the DLQ
    # (offset, home) of records already acked (consumer.ingest.ownership: by another WAL, or as a
    # duplicate by this one): acked again with that home, never stored here
    homed: list[tuple[int, Stored]] = field(default_factory=list)


@dataclass(slots=True)
class BatchPlan:
    records: list[EventRecord]  # for the WAL, in poll order
    dead_letters: list[DeadLetter]  # for the DLQ
    shares: list[Share]
    commit: dict[tuple[str, int], int]  # (topic, partition) -> next offset, once the batch is settled
    consumed: int


class BatchCounts(NamedTuple):
    consumed: int
    stored: int  # newly written to the WAL
    duplicates: int  # producer retries (same event_id or content)
    redeliveries: int  # Kafka redeliveries (same source position)
    rejected: int
    reasons: tuple[str, ...] = ()  # of the rejected records


class PartitionHomes(Protocol):
    """The homes to repeat of one partition's offsets (consumer.protocol.handoff.Homes)."""

    def get(self, offset: int) -> Stored | None: ...


# (topic, partition) -> its offsets' homes to repeat: their first ack's (consumer.ingest.ownership)
Homes = Mapping[tuple[str, int], PartitionHomes]


# The longest reason an ack or a dead letter carries (reasons quote little of the input
# already, consumer.protocol.events; this bounds any other).
MAX_REASON_CHARS = 512


def plan_batch(
    poll: Poll, decoder: Decoder, homes: Homes | None = None, max_dead_letter_bytes: int = MAX_DEAD_LETTER_BYTES
) -> BatchPlan:
    """Decode a poll: records for the WAL, dead letters with their reasons, per-partition
    shares, and the offsets to commit once everything is durable and delivered. A record
    whose offset has a home in ``homes`` (acked first, by another WAL or as a duplicate) is
    not decoded again: its ack repeats that home (ARCHITECTURE invariant 7)."""
    decode = decoder.decode
    records: list[EventRecord] = []
    dead_letters: list[DeadLetter] = []
    shares: list[Share] = []
    commit: dict[tuple[str, int], int] = {}
    consumed = 0
    for (topic, partition), messages in poll.items():
        if not messages:
            continue
        consumed += len(messages)
        commit[(topic, partition)] = messages[-1].offset + 1
        share = Share(topic, partition, len(records), [], [])
        homed = homes.get((topic, partition)) if homes else None
        for message in messages:
            if homed:
                home = homed.get(message.offset)
                if home is not None:
                    share.homed.append((message.offset, home))
                    continue
            result = decode(message.value, topic, partition, message.offset)
            if type(result) is Rejected:
                reason = (
                    result.reason
                    if len(result.reason) <= MAX_REASON_CHARS
                    else (result.reason[: MAX_REASON_CHARS - 3] + "...")
                )
                dead_letters.append(dead_letter(message, reason, max_dead_letter_bytes))
                share.rejected.append((message.offset, reason))
            else:
                records.append(result)  # type: ignore[arg-type]
                share.offsets.append(message.offset)
        shares.append(share)
    return BatchPlan(records, dead_letters, shares, commit, consumed)


def acks_for(plan: BatchPlan, results: Sequence[AppendResult], wal_id: str) -> list[Ack]:
    """The acks of a batch, from the WAL's results (one per plan record): one per
    partition, then one per WAL whose homes the batch repeats (an ack names one
    WAL). Acks of one partition share a key, so they keep this order on the reply topic."""
    if len(results) != len(plan.records):
        raise ValueError(f"{len(results)} WAL results for {len(plan.records)} records")
    acks = []
    for share in plan.shares:
        acks.append(
            build_ack(
                wal_id,
                share.topic,
                share.partition,
                share.offsets,
                results[share.first : share.first + len(share.offsets)],
                rejected=share.rejected,
            )
        )
        by_wal: dict[str, list[tuple[int, Stored]]] = {}
        for offset, home in share.homed:
            by_wal.setdefault(home.wal_id, []).append((offset, home))
        for other_wal, homed in by_wal.items():
            acks.append(
                build_ack(
                    other_wal,
                    share.topic,
                    share.partition,
                    [offset for offset, _ in homed],
                    [AppendResult(home.seq, True, not home.duplicate) for _, home in homed],
                    rejected=[],
                )
            )
    return acks


def last_seqs(plan: BatchPlan, results: Sequence[AppendResult]) -> dict[tuple[str, int], int]:
    """Per partition, the highest seq of this WAL the batch's acks name (0: none)."""
    return {
        (share.topic, share.partition): max(
            map(_SEQ, results[share.first : share.first + len(share.offsets)]), default=0
        )
        for share in plan.shares
    }


_SEQ = itemgetter(0)  # AppendResult.seq, read in C


def count_outcomes(plan: BatchPlan, results: Sequence[AppendResult]) -> BatchCounts:
    duplicates = sum(1 for r in results if r.duplicate)
    redeliveries = sum(1 for r in results if r.redelivery)
    homed = sum(len(share.homed) for share in plan.shares)  # acked again with their first home
    return BatchCounts(
        plan.consumed,
        len(results) - duplicates,
        duplicates - redeliveries,
        redeliveries + homed,
        len(plan.dead_letters),
        tuple(reason for share in plan.shares for _, reason in share.rejected),
    )
