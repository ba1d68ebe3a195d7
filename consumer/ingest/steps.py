"""The service's I/O step for one poll: send what the batch core planned, write it to
the WAL, and hand the batch to the commit step.

``stage`` plans the poll (consumer.ingest.plan, pure), hands the dead letters to the
producer and the records to the WAL without waiting for the fsync; ``complete`` waits
for the fsync, then sends the acks. The service stages poll N+1 before completing
poll N, so the WAL's write and fsync of one batch overlap the network wait for the next.

The order is the invariants (ARCHITECTURE 1, 2, 5):

* dead letters are sent first, so their round trip overlaps the WAL fsync; acks only
  once the WAL says the batch is durable (the future resolves after the fdatasync);
* the batch's deliveries (acks and dead letters) travel with its offsets to the commit
  step (consumer.ingest.commits), which commits them only once every delivery succeeded. A
  crash anywhere before the commit means redelivery, which the WAL recognises by source
  position (acked again with the original seq, stored once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import NamedTuple

from consumer.ingest.commits import InFlight, PartitionMark
from consumer.ingest.plan import BatchCounts, BatchPlan, Homes, acks_for, count_outcomes, last_seqs, plan_batch
from consumer.kafka.adapter import KafkaAdapter
from consumer.protocol.acks import fit
from consumer.protocol.events import Decoder
from consumer.protocol.types import Delivery, Partition, Poll
from walcore import AppendResult, Wal
from walcore.format import encode_body, rows


@dataclass(slots=True)
class Staged:
    plan: BatchPlan
    deliveries: list[Delivery]
    durable: Future[list[AppendResult]]
    staged_at: float  # time.monotonic() when the poll was handed to the WAL
    rows: bytes  # the records' WAL rows, for the store's applier
    runs: list[tuple[str, int, int]]  # (topic, partition, count): the records' sources, in order


class Timings(NamedTuple):
    wal_commit_s: float  # handed to the WAL -> its fdatasync returned
    poll_to_ack_s: float  # staged -> acks handed to the producer


class BatchSteps:
    def __init__(
        self,
        wal: Wal,
        decoder: Decoder,
        client: KafkaAdapter,
        *,
        reply_topic: str,
        dlq_topic: str,
        max_message_bytes: int,
        after_fsync: Callable[[int], None],
        on_durable: Callable[[bytes, list[tuple[str, int, int]], list[AppendResult]], None],
    ) -> None:
        """``after_fsync(n)`` runs after the n-th batch's fsync, before its acks: a test's
        crash point (tests/support/hooked_service.py); the service passes a no-op. ``on_durable``
        gets each durable batch's WAL rows, their sources as (topic, partition, count) runs, and
        results (the store's applier)."""
        self._on_durable = on_durable
        self._wal = wal
        self._decoder = decoder
        self._client = client
        self._reply_topic = reply_topic
        self._dlq_topic = dlq_topic
        self._after_fsync = after_fsync
        self._completed = 0
        # Every message sent must fit the producer's request limit: dead letters are cut to
        # fit it, acks split to half of it.
        self._max_dead_letter = max_message_bytes - 48 * 1024  # room for record and request framing
        self._max_ack = max_message_bytes // 2

    def stage(self, poll: Poll, homes: Homes | None = None) -> Staged:
        """Plan a poll, send its dead letters, submit its records to the WAL (not waiting
        for the fsync: the caller polls its next batch meanwhile). ``homes``: offsets acked
        already, whose first home the WAL cannot answer for (consumer.ingest.ownership): acked again
        with that home, never stored."""
        plan = plan_batch(poll, self._decoder, homes, self._max_dead_letter)
        send = self._client.send
        deliveries = [send(self._dlq_topic, letter.key, letter.value, letter.headers) for letter in plan.dead_letters]
        body = encode_body(plan.records) if plan.records else None
        return Staged(
            plan,
            deliveries,
            self._wal.submit_encoded(plan.records, body),
            time.monotonic(),
            rows(body) if body is not None else b"",
            [(share.topic, share.partition, len(share.offsets)) for share in plan.shares if share.offsets],
        )

    def complete(self, staged: Staged) -> tuple[InFlight, BatchCounts, Timings]:
        """Wait for the batch's fsync (raises WalFailed), then send its acks (not waiting
        for them). Returns the batch for the commit step, its counts and timings."""
        results = staged.durable.result()
        durable_at = time.monotonic()
        self._completed += 1
        self._after_fsync(self._completed)
        self._on_durable(staged.rows, staged.runs, results)
        send = self._client.send
        deliveries = staged.deliveries
        seqs = last_seqs(staged.plan, results)
        marks: dict[Partition, PartitionMark] = {}
        for ack in acks_for(staged.plan, results, self._wal.wal_id):
            for part, value in fit(ack, self._max_ack):  # one message, or several when too large for one
                delivery = send(self._reply_topic, part.key, value)
                deliveries.append(delivery)
            # The commit's mark points at the partition's last ack of the batch.
            marks[(ack.topic, ack.partition)] = PartitionMark(seqs[(ack.topic, ack.partition)], delivery)
        timings = Timings(durable_at - staged.staged_at, time.monotonic() - staged.staged_at)
        first_seq = next((result[0] for result in results if not result[1]), 0)  # the first stored anew
        return (
            InFlight(staged.plan.commit, deliveries, marks, first_seq),
            count_outcomes(staged.plan, results),
            timings,
        )
