"""One poll, made durable: decode → DLQ → WAL (fsync) → acks, and the offsets to commit.

``stage`` decodes and submits to the WAL; ``complete`` waits for the fsync and sends the
acks. The service stages poll N+1 before completing poll N, so the WAL's write and fsync
of one batch overlap the network wait for the next.

The order is the invariants (ARCHITECTURE 1, 2, 5):

* DLQ messages are handed to the producer first, so their network round trip overlaps
  the WAL fsync; acks only once ``append_batch`` has returned, i.e. after the fsync.
* The batch's deliveries (acks and dead letters) are returned with its offsets. The
  caller (consumer.service) commits those offsets only once every delivery has
  succeeded (``settled(report)``), so no offset is committed unless every record is
  in the WAL or the DLQ and its ack is on the broker. A crash anywhere before the commit
  means redelivery, which the WAL recognises by source position (acked again with the
  original seq, stored once).
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.acks import build_ack
from consumer.dlq import dead_letter
from consumer.events import Decoder, Rejected
from walcore import AppendResult, EventRecord, Wal

# Test-only crash point: TIDAL_TEST_CRASH_AFTER_FSYNC=N kills the process with SIGKILL
# right after the N-th batch's fsync, before acks and commit. Read once at import.
_CRASH_AFTER_FSYNC = int(os.environ.get("TIDAL_TEST_CRASH_AFTER_FSYNC", "0"))


class DeliveryFailed(RuntimeError):
    """An ack or DLQ message could not be delivered: nothing of the batch is committed."""


@dataclass
class BatchReport:
    offsets: dict[TopicPartition, OffsetAndMetadata]
    deliveries: list[Any] = field(default_factory=list)  # kafka-python send futures
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    redeliveries: int = 0
    rejected: int = 0


@dataclass
class StagedBatch:
    report: BatchReport
    shares: list[tuple[TopicPartition, int, list[int], list[tuple[int, str]]]]
    wal_results: Future[list[AppendResult]]


class Pipeline:
    def __init__(self, wal: Wal, decoder: Decoder, producer: Any, *, reply_topic: str, dlq_topic: str) -> None:
        self._wal = wal
        self._decoder = decoder
        self._producer = producer
        self._reply_topic = reply_topic
        self._dlq_topic = dlq_topic
        self._batches = 0

    def stage(self, polled: dict[TopicPartition, list[Any]]) -> StagedBatch:
        """Decode a poll, hand rejects to the DLQ and the rest to the WAL (not waiting for
        the fsync: the caller polls its next batch meanwhile)."""
        decode = self._decoder.decode
        send = self._producer.send
        records: list[EventRecord] = []
        # per partition: (tp, index of its first record in `records`, its offsets, its rejects)
        shares: list[tuple[TopicPartition, int, list[int], list[tuple[int, str]]]] = []
        report = BatchReport(offsets={})
        for tp, messages in polled.items():
            report.consumed += len(messages)
            report.offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            first = len(records)
            offsets: list[int] = []
            rejected: list[tuple[int, str]] = []
            for message in messages:
                result = decode(message.value, tp.topic, tp.partition, message.offset)
                if type(result) is Rejected:
                    letter = dead_letter(message, result.reason)
                    report.deliveries.append(send(self._dlq_topic, key=letter.key, value=letter.value,
                                                  headers=letter.headers))
                    rejected.append((message.offset, result.reason))
                else:
                    records.append(result)
                    offsets.append(message.offset)
            shares.append((tp, first, offsets, rejected))
            report.rejected += len(rejected)
        return StagedBatch(report, shares, self._wal.submit_batch(records))

    def complete(self, staged: StagedBatch) -> BatchReport:
        """Wait for the batch's fsync, then publish its acks (not waiting for them)."""
        results = staged.wal_results.result()  # returns after the fsync; raises WalFailed
        self._batches += 1
        if self._batches == _CRASH_AFTER_FSYNC:
            os.kill(os.getpid(), signal.SIGKILL)
        report = staged.report
        wal_id = self._wal.wal_id
        for tp, first, offsets, rejected in staged.shares:
            share = results[first:first + len(offsets)]
            key, value = build_ack(wal_id, tp.topic, tp.partition, offsets, share, rejected=rejected)
            report.deliveries.append(self._producer.send(self._reply_topic, key=key, value=value))
        duplicates = sum(1 for r in results if r.duplicate)
        report.redeliveries = sum(1 for r in results if r.redelivery)
        report.duplicates = duplicates - report.redeliveries
        report.stored = len(results) - duplicates
        return report


def settled(report: BatchReport) -> bool:
    """True when every ack/DLQ delivery of the batch is done; raises DeliveryFailed if any
    failed (then nothing of the batch may be committed)."""
    if not all(d.is_done for d in report.deliveries):
        return False
    failed = [d.exception for d in report.deliveries if d.failed()]
    if failed:
        raise DeliveryFailed(f"{len(failed)} of {len(report.deliveries)} ack/DLQ messages were not delivered "
                             f"(first: {failed[0]!r}); nothing of this batch is committed")
    return True
