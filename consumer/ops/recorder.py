"""The periodic progress line: events/s, batch sizes, duplicates, rejects, lag.

Every field of the progress line, and its meaning (the Prometheus metrics are listed in
consumer/ops/metric_defs.py):
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

from consumer.ingest.plan import BatchCounts
from consumer.ingest.steps import Timings
from consumer.ops.metric_defs import PrometheusMetrics, reason_class

log = logging.getLogger(__name__)

GAUGE_PERIOD_S = 1.0  # how often the gauges (lag, WAL size, dedup window) are sampled


class BatchRecorder:
    """The progress line (every ``interval_s``) and the Prometheus metrics
    (consumer.ops.metric_defs), fed by one ``record`` per batch; ``on_interval`` samples the
    gauges (lag, WAL size...) at each progress line."""

    def __init__(self, interval_s: float, prom: PrometheusMetrics, on_interval: Callable[[], None]) -> None:
        self._interval = interval_s
        self._since = time.monotonic()
        self._prom = prom
        self._on_interval = on_interval
        self._sampled = 0.0
        self._zero()

    def _zero(self) -> None:
        self.consumed = self.stored = self.batches = self.duplicates = self.redeliveries = self.rejected = 0

    def record(self, counts: BatchCounts, timings: Timings) -> None:
        self.consumed += counts.consumed
        self.stored += counts.stored
        self.batches += 1
        self.duplicates += counts.duplicates
        self.redeliveries += counts.redeliveries
        self.rejected += counts.rejected
        prom = self._prom
        prom.consumed.inc(counts.consumed)
        prom.stored.inc(counts.stored)
        prom.duplicates.inc(counts.duplicates)
        prom.redelivered.inc(counts.redeliveries)
        for reason in counts.reasons:
            prom.rejected.labels(reason_class(reason)).inc()
        prom.batch_size.observe(counts.consumed)
        prom.wal_commit_seconds.observe(timings.wal_commit_s)
        prom.poll_to_ack_seconds.observe(timings.poll_to_ack_s)

    def maybe_log(
        self, lag: Callable[[], dict[tuple[str, int], tuple[int, int]] | None], *, force: bool = False
    ) -> None:
        """Sample the gauges about once a second (a scrape sees fresh values) and write the
        progress line every ``interval_s``."""
        now = time.monotonic()
        elapsed = now - self._since
        if now - self._sampled < GAUGE_PERIOD_S and elapsed < self._interval and not force:
            return
        self._sampled = now
        by_partition = lag()
        current_lag = None if by_partition is None else sum(behind for _, behind in by_partition.values())
        if by_partition is not None:
            for (topic, partition), (end, behind) in by_partition.items():
                self._prom.end_offset.labels(topic, str(partition)).set(end)
                self._prom.partition_lag.labels(topic, str(partition)).set(behind)
            self._prom.lag.set(current_lag or 0)
        self._on_interval()
        if elapsed < self._interval and not force:
            return
        log.info(
            "events/s=%.0f stored=%d batches=%d avg_batch=%.0f duplicates=%d redeliveries=%d rejected=%d lag=%s",
            self.consumed / elapsed if elapsed > 0 else 0.0,
            self.stored,
            self.batches,
            self.consumed / self.batches if self.batches else 0.0,
            self.duplicates,
            self.redeliveries,
            self.rejected,
            "unknown" if current_lag is None else current_lag,
        )
        self._since = now
        self._zero()
