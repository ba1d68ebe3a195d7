"""The periodic progress line: events/s, batch sizes, duplicates, rejects, lag.

Every metric the service reports, and its meaning:
  events/s     consumed records per second over the interval
  stored       records newly written to the WAL
  batches      polls processed (each = one WAL group commit)
  avg_batch    consumed records per batch
  duplicates   producer retries recognised (same event_id or content) — acked with the original seq
  redelivered  Kafka redeliveries recognised by source position — acked with the original seq
  rejected     records sent to the DLQ
  lag          sum over assigned partitions of (high watermark - position)
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("tidal.metrics")


class Metrics:
    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._since = time.monotonic()
        self._zero()

    def _zero(self) -> None:
        self.consumed = self.stored = self.batches = self.duplicates = self.redelivered = self.rejected = 0

    def record(self, report: Any) -> None:
        self.consumed += report.consumed
        self.stored += report.stored
        self.batches += 1
        self.duplicates += report.duplicates
        self.redelivered += report.redeliveries
        self.rejected += report.rejected

    def maybe_log(self, consumer: Any, *, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self._since
        if elapsed < self._interval and not force:
            return
        log.info("events/s=%.0f stored=%d batches=%d avg_batch=%.0f duplicates=%d redelivered=%d rejected=%d "
                 "lag=%s", self.consumed / elapsed if elapsed > 0 else 0.0, self.stored, self.batches,
                 self.consumed / self.batches if self.batches else 0.0, self.duplicates, self.redelivered,
                 self.rejected, _lag(consumer))
        self._since = now
        self._zero()


def _lag(consumer: Any) -> int | str:
    total = 0
    try:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                return "unknown"
            total += max(0, high - consumer.position(tp, timeout_ms=0))
    except Exception:  # noqa: BLE001 - a progress line must never stop the service
        return "unknown"
    return total
