"""The periodic progress line: events/s, batch sizes, duplicates, rejects, lag.

Every metric the service reports, and its meaning:
  events/s      consumed records per second over the interval
  stored        records newly written to the WAL
  batches       polls processed (each = one WAL group commit)
  avg_batch     consumed records per batch
  duplicates    producer retries recognised (same event_id or content): acked with the original seq
  redeliveries  Kafka redeliveries recognised by source position: acked with the original seq
  rejected      records sent to the DLQ
  lag           sum over assigned partitions of (end offset - position), "unknown" when not known
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from consumer.batch import BatchCounts

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._since = time.monotonic()
        self._zero()

    def _zero(self) -> None:
        self.consumed = self.stored = self.batches = self.duplicates = self.redeliveries = self.rejected = 0

    def record(self, counts: BatchCounts) -> None:
        self.consumed += counts.consumed
        self.stored += counts.stored
        self.batches += 1
        self.duplicates += counts.duplicates
        self.redeliveries += counts.redeliveries
        self.rejected += counts.rejected

    def maybe_log(self, lag: Callable[[], int | None], *, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self._since
        if elapsed < self._interval and not force:
            return
        current_lag = lag()
        log.info("events/s=%.0f stored=%d batches=%d avg_batch=%.0f duplicates=%d redeliveries=%d rejected=%d "
                 "lag=%s", self.consumed / elapsed if elapsed > 0 else 0.0, self.stored, self.batches,
                 self.consumed / self.batches if self.batches else 0.0, self.duplicates, self.redeliveries,
                 self.rejected, "unknown" if current_lag is None else current_lag)
        self._since = now
        self._zero()
