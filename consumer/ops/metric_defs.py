"""Every metric the service exports to Prometheus, with its meaning (after arroyo's
``metric_defs.py``). Names follow Prometheus conventions: units in the name, ``_total``
counters. One registry per Service, so tests and embedders never share global state.
docs/operations.md lists them with what to alert on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PrometheusMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, text, labels, registry=registry)

        def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, text, labels, registry=registry)

        self.registry = registry
        self.consumed = counter("tidal_events_consumed_total", "Records consumed from the input topics.")
        self.stored = counter("tidal_events_stored_total", "Records newly written (and fdatasynced) to the WAL.")
        self.duplicates = counter(
            "tidal_events_duplicate_total", "Producer retries (same event_id or content) acked with the original seq."
        )
        self.redelivered = counter(
            "tidal_events_redelivered_total", "Kafka redeliveries acked again with their first home, not stored again."
        )
        self.rejected = counter(
            "tidal_events_rejected_total", "Records sent to the DLQ, by the field their reason names.", ("reason",)
        )
        self.batch_size = Histogram(
            "tidal_batch_size_events",
            "Records per consumed batch (one WAL group commit).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.wal_commit_seconds = Histogram(
            "tidal_wal_commit_seconds",
            "From handing a batch to the WAL to its fdatasync returning.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.fsync_seconds = Histogram(
            "tidal_wal_fsync_seconds", "Each fdatasync of a WAL segment.", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.poll_to_ack_seconds = Histogram(
            "tidal_poll_to_ack_seconds",
            "From a poll returning to its acks being handed to the producer.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "tidal_offset_commit_seconds",
            "Synchronous offset commits (drains).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_failures = counter(
            "tidal_offset_commit_failures_total",
            "Offset commits that failed or were refused (retried or covered later).",
        )
        self.batches_in_flight = gauge(
            "tidal_batches_in_flight", "Durable batches whose acks/dead letters are not yet confirmed or committed."
        )
        self.rebalances = counter("tidal_rebalances_total", "Partition assignments and revocations.", ("kind",))
        self.committed_offset = gauge(
            "tidal_partition_committed_offset", "Last offset committed by this instance.", ("topic", "partition")
        )
        self.end_offset = gauge(
            "tidal_partition_end_offset",
            "End offset (high watermark) of an assigned partition.",
            ("topic", "partition"),
        )
        self.partition_lag = gauge(
            "tidal_partition_lag_events", "End offset - position of an assigned partition.", ("topic", "partition")
        )
        self.lag = gauge("tidal_consumer_lag_events", "Sum over assigned partitions of end offset - position.")
        self.deliveries_in_flight = gauge(
            "tidal_deliveries_in_flight", "Acks and dead letters handed to the producer, not yet confirmed."
        )
        self.dedup_keys = gauge("tidal_dedup_window_keys", "Keys in the dedup window (both generations).")
        self.dedup_bytes = gauge(
            "tidal_dedup_window_bytes", "Estimated memory of the dedup window: its tables plus keys at a sampled size."
        )
        self.wal_last_seq = gauge("tidal_wal_last_seq", "Highest durable seq of this instance's WAL.")
        self.wal_segments = gauge("tidal_wal_segments", "Segment files of the WAL.")
        self.wal_bytes = gauge("tidal_wal_bytes", "Bytes of the WAL's segment files.")
        self.store_applied_seq = gauge(
            "tidal_store_applied_seq",
            "Highest seq the signal store holds durably (tidal_wal_last_seq minus this: the applier's lag, in events).",
        )
        self.queries = counter(
            "tidal_queries_total",
            "Query API requests, by route (entities, top, scores, other) and HTTP status.",
            ("route", "status"),
        )
        self.query_seconds = Histogram(
            "tidal_query_seconds",
            "Query API answer times, by route (read-your-writes waits included).",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.store_catch_up_seconds = Histogram(
            "tidal_store_catch_up_seconds",
            "The query API's catch-ups with the store's applier: each holds off the answers queued "
            "behind it (and the service's interpreter) for this long.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.info = Info("tidal_build", "Version and identity of this instance.", registry=registry)


def query_route(path: str) -> str:
    """The route of a query API path, a label of bounded cardinality."""
    route = path.split("?", 1)[0].removeprefix("/v1/").split("/", 1)[0]
    return route if route in ("entities", "top", "scores") else "other"


def reason_class(reason: str) -> str:
    """The field a rejection reason names (``weight: ...`` -> ``weight``): a label of
    bounded cardinality, never the producer's input."""
    head = reason.split(":", 1)[0]
    return head if head.isidentifier() and len(head) <= 32 else "other"
