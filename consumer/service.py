"""The service loop: open the WAL, connect, poll, stage, complete, commit, repeat.

Exit codes: consumer.errors.ExitCode (docs/operations.md). The loop owns no rule of its
own: the batch core (consumer.ingest.plan) decides what each record becomes, the I/O step
(consumer.ingest.steps) sends and writes, the commit step (consumer.ingest.commits) decides what
may be committed, and the adapter (consumer.kafka.adapter) is the only code that talks to
Kafka.
"""

from __future__ import annotations

import errno
import gc
import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from consumer.config import Settings
from consumer.errors import (
    CodecMissing,
    DeliveryFailed,
    ExitCode,
    KafkaOptionInvalid,
    KafkaRefused,
    KafkaUnavailable,
    RegistrationRefused,
    StoreFailed,
    TransactionAborted,
    WalRunningElsewhere,
    WalTailLost,
)
from consumer.ingest.commits import Backoff, Committer
from consumer.ingest.ownership import Ownership
from consumer.ingest.steps import BatchSteps, Staged
from consumer.kafka import backends
from consumer.kafka.adapter import KafkaAdapter, Partition
from consumer.ops.health import Endpoints, Health
from consumer.ops.metric_defs import PrometheusMetrics, query_route
from consumer.ops.recorder import BatchRecorder
from consumer.protocol.events import Decoder
from consumer.protocol.types import Commits
from consumer.serving.api import QueryApi
from consumer.serving.group import GroupWals
from consumer.serving.reader import StoreReader
from consumer.store.applier import Applier
from walcore import AppendResult, Wal, WalCorruption, WalFailed, WalLocked

log = logging.getLogger(__name__)

MAX_IN_FLIGHT_BATCHES = 4
_DISK_FAILING = {errno.ENOSPC, errno.EDQUOT, errno.EIO}
# With a batch waiting for its fsync, poll this long at most: the batch's acks go out as
# soon as the next turn finds it durable (ack latency), and a busy stream returns at once.
BUSY_TICK_MS = 1
# How often the WAL's retention floor asks the group whether another owner has committed
# past the events this WAL holds of partitions it no longer has (consumer.ingest.ownership).
FLOOR_REFRESH_S = 30.0

# What ends the service, with which exit code and which line (one table: docs/operations.md).
_FATAL: list[tuple[type[BaseException] | tuple[type[BaseException], ...], ExitCode, str]] = [
    ((WalFailed, WalCorruption), ExitCode.WAL_FATAL, "fatal WAL error, nothing of the batch is committed: %s"),
    (WalTailLost, ExitCode.WAL_FATAL, "%s"),
    (StoreFailed, ExitCode.STORE, "%s"),
    (DeliveryFailed, ExitCode.DELIVERY, "%s"),
    (TransactionAborted, ExitCode.FENCED, "%s"),
    (WalRunningElsewhere, ExitCode.WAL_UNUSABLE, "%s"),
    (
        KafkaRefused,
        ExitCode.KAFKA_REFUSED,
        "the broker refuses this client: %s; nothing was stored, acked or committed since",
    ),
    (
        CodecMissing,
        ExitCode.CODEC,
        "cannot read the input: %s; nothing of those records was stored, acked or committed",
    ),
    # The client reconnects by itself; this is an outage longer than its own timeouts (e.g.
    # a send buffer full beyond max_block_ms). Nothing unacked is committed.
    (
        KafkaUnavailable,
        ExitCode.KAFKA,
        "Kafka unavailable beyond the client's timeouts (%s); nothing uncommitted is "
        "lost, restart when the broker is back",
    ),
]
_FATAL_ERRORS = tuple(kind for kinds, _, _ in _FATAL for kind in (kinds if isinstance(kinds, tuple) else (kinds,)))

# Builds the Kafka adapter: (settings, wal_id) -> adapter; raises KafkaUnavailable.
AdapterFactory = Callable[[Settings, str], KafkaAdapter]


def backend_adapter(settings: Settings, wal_id: str) -> KafkaAdapter:
    """The adapter of ``settings.backend``, as this WAL's group member. Transactional
    delivery uses the WAL id as the producer's transactional id: the WAL's lock keeps one
    live process per id, and a restart on the WAL fences (and aborts) its predecessor's."""
    return backends.connect(
        settings,
        client_id=f"tidal-{wal_id}",
        group_instance_id=settings.instance_id(wal_id),
        transactional_id=f"tidal-{wal_id}" if settings.delivery == "transactional" else None,
    )


def _no_hook(_batch: int) -> None:
    pass


def _version() -> str:
    try:
        return importlib.metadata.version("tidal-consumer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class DrainOnRevoke:
    """At revocation (inside poll, on the service thread) the service drains: every batch
    in flight is completed (fsync), its acks flushed, its offsets committed synchronously,
    before the partitions go.

    On assignment the positions come from the committed offsets (or ``earliest``), and
    deliberately never skip ahead to what the WAL holds: records the WAL stored but
    whose offsets were not committed (a crash between fsync and commit) must be consumed
    again so that their acks are published again. The WAL recognises each of them by
    its source position and answers with the original seq without storing it twice.
    """

    def __init__(self, service: Service) -> None:
        self._service = service

    def revoked(self, partitions: Sequence[Partition]) -> None:
        self._service.health.member = False
        self._service.prom.rebalances.labels("revoked").inc()
        drained = self._service.drain()
        self._service.ownership.revoked(partitions)
        log.info(
            "partitions revoked: %s (drained %d batch(es) in flight first: durable, acked and committed "
            "unless a warning above says otherwise)",
            _names(partitions),
            drained,
        )

    def assigned(self, partitions: Sequence[Partition]) -> None:
        log.info("partitions assigned: %s", _names(partitions))
        # Before anything of them is stored: what other WALs acked first, what this WAL lost.
        stored = self._service.ownership.assigned(partitions)
        self._service.forget_refused_commits()
        self._service.prom.rebalances.labels("assigned").inc()
        self._service.health.member = True
        for topic, partition in partitions:
            last = stored.get((topic, partition))
            if last is not None:
                log.info(
                    "%s:%d: the WAL holds offsets up to %d; any of them consumed again is acked with "
                    "its original seq, not stored twice",
                    topic,
                    partition,
                    last,
                    extra={"topic": topic, "partition": partition, "offset": last},
                )


def _names(partitions: Sequence[Partition]) -> str:
    return ", ".join(f"{topic}:{partition}" for topic, partition in partitions) or "none"


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        adapter_factory: AdapterFactory = backend_adapter,
        after_fsync: Callable[[int], None] = _no_hook,
        before_commit: Callable[[int], None] = _no_hook,
    ) -> None:
        """``stop``: set to stop (after a drain); the CLI's signal handlers set it.
        ``after_fsync(n)``: called after the n-th batch is durable, before its acks;
        ``before_commit(n)``: after the n-th batch's acks are delivered, before its commit
        (crash points for tests; see tests/support/hooked_service.py)."""
        self._applier: Applier | None = None
        self._reader: StoreReader | None = None
        self._group_wals: GroupWals | None = None
        self.settings = settings
        self.stop = stop or threading.Event()
        self.wal: Wal
        self.ownership: Ownership
        self._adapter_factory = adapter_factory
        self._after_fsync = after_fsync
        self._before_commit = before_commit
        self._staged: Staged | None = None  # submitted to the WAL, acks not yet sent
        self._floor_due = 0.0  # when the retention floor next reads the group's commits
        self._steps: BatchSteps
        self._committer: Committer
        self._serving = False  # the steps, ownership and committer exist (set by _serve)
        self._recorder: BatchRecorder
        self.registry = CollectorRegistry()
        self.prom = PrometheusMetrics(self.registry)
        self.health = Health(settings.health_stall_s)

    def run(self) -> ExitCode:
        endpoints = None
        if self.settings.metrics_port:
            try:
                endpoints = Endpoints(
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                    self.health,
                    self.registry,
                    QueryApi(lambda: self._reader, self._observe_query),
                )
            except OSError as exc:
                log.critical(
                    "cannot serve metrics_port %s:%d: %s", self.settings.metrics_host, self.settings.metrics_port, exc
                )
                return ExitCode.CONFIG
        try:
            return self._run_with_wal()
        finally:
            if endpoints is not None:
                endpoints.close()

    def _run_with_wal(self) -> ExitCode:
        failed = self._open_wal()
        if failed is not None:
            return failed
        self.health.wal_open = True
        settings = self.settings
        self.prom.info.info(
            {
                "version": _version(),
                "wal_id": self.wal.wal_id,
                "group_id": settings.group_id,
                "topics": ",".join(settings.topics),
                "reply_topic": settings.reply_topic,
                "dlq_topic": settings.dlq_topic,
                "instance_id": settings.instance_id(self.wal.wal_id) or "",
            }
        )
        try:
            failed = self._open_store()
            if failed is not None:
                return failed
            client = self._connect()
            if isinstance(client, ExitCode):
                return client
            try:
                return self._serve(client)
            finally:
                client.close()
        finally:
            self._close_store()
            self.wal.close()
            log.info("WAL closed at seq %d", self.wal.last_seq)

    def _open_store(self) -> ExitCode | None:
        """Start the store's applier and wait until the store has caught up with the WAL
        ([store] enabled = false: no store)."""
        if not self.settings.store.enabled:
            return None
        settings, wal = self.settings, self.wal
        try:
            self._applier = Applier(wal, settings, self._keep_from)
            self._applier.start()
            if settings.metrics_port:  # the query API's: no HTTP server, nothing to answer
                self._group_wals = group = GroupWals(wal.wal_id, settings.topics)
                self._reader = StoreReader(
                    settings.store_dir(),
                    settings.signal_schema(),
                    wal.wal_id,
                    lambda: wal.last_seq,
                    lambda: group.current,
                    caught_up=self.prom.store_catch_up_seconds.observe,
                )
        except StoreFailed as exc:
            return self._fatal(exc)
        except Exception as exc:  # noqa: BLE001 - RocksDB raises plain Exception
            return self._fatal(
                StoreFailed(f"cannot open the signal store in {settings.store_dir()} for queries: {exc}")
            )
        return None

    def _close_store(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
        if self._applier is not None:
            try:
                self._applier.close()
            except StoreFailed as exc:
                log.critical("%s", exc)

    def _open_wal(self) -> ExitCode | None:
        """Open (recover) the WAL; the exit code and one logged line when it cannot be."""
        wal_dir = self.settings.wal_dir
        try:
            self.wal = Wal.open(wal_dir, self.settings.wal.to_wal_config())
        except WalLocked as exc:
            log.error("%s", exc)
            return ExitCode.WAL_UNUSABLE
        except WalCorruption as exc:
            log.critical("%s; run `walcore verify %s` and see docs/operations.md", exc, wal_dir)
            return ExitCode.WAL_FATAL
        except OSError as exc:
            if exc.errno in _DISK_FAILING:
                log.critical(
                    "cannot open the WAL in %s: %s (the disk is full or failing); nothing was consumed", wal_dir, exc
                )
                return ExitCode.WAL_FATAL
            log.critical("the WAL directory %s is unusable: %s", wal_dir, exc)
            return ExitCode.WAL_UNUSABLE
        return None

    def _connect(self) -> KafkaAdapter | ExitCode:
        """The adapter, or the exit code: OK when stopped while waiting for the broker."""
        backoff = Backoff(self.stop, first=0.5, cap=15.0)
        while not self.stop.is_set():
            self.health.loop_turned = time.monotonic()  # alive, waiting for the broker (not ready)
            try:
                return self._adapter_factory(self.settings, self.wal.wal_id)
            except KafkaUnavailable as exc:
                log.warning("cannot reach Kafka at %s (%s); retrying", self.settings.bootstrap_servers, exc)
                if not backoff.wait():
                    break
            except KafkaOptionInvalid as exc:
                log.critical("%s", exc)
                return ExitCode.CONFIG
            except (KafkaRefused, TransactionAborted) as exc:  # refused, or transactions cannot start
                return self._fatal(exc)
        return ExitCode.OK

    def _serve(self, client: KafkaAdapter) -> ExitCode:
        settings = self.settings
        self._steps = BatchSteps(
            self.wal,
            Decoder(settings.signal_schema(), settings.max_message_bytes),
            client,
            reply_topic=settings.reply_topic,
            dlq_topic=settings.dlq_topic,
            max_message_bytes=settings.producer_request_bytes(),
            after_fsync=self._after_fsync,
            on_durable=self._durable,
        )
        self.ownership = Ownership(
            client,
            self.wal,
            settings.reply_topic,
            on_voided=self._applier.voided if self._applier else lambda _seqs: None,
        )
        self._committer = committer = Committer(
            client,
            wal_id=self.wal.wal_id,
            max_in_flight=MAX_IN_FLIGHT_BATCHES,
            retry_for_s=settings.commit_retry_max_s,
            stop=self.stop,
            before_commit=self._before_commit,
            on_committed=self._committed,
            on_sync_commit=self._commit_result,
            history=self.ownership.history,
        )
        self._recorder = metrics = BatchRecorder(settings.metrics_interval_s, self.prom, self._sample_gauges)
        self._serving = True
        client.subscribe(settings.topics, DrainOnRevoke(self))
        log.info(
            "consuming %s as group %s into WAL %s (%s); acks to %s, rejects to %s; Kafka client %s",
            ",".join(settings.topics),
            settings.group_id,
            settings.wal_dir,
            self.wal.wal_id,
            settings.reply_topic,
            settings.dlq_topic,
            settings.backend,
        )
        # Long-lived objects (the dedup window holds up to millions of keys) would make
        # every full GC pass walk them; freeze what start-up built and collect less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 50)
        try:
            while not self.stop.is_set():
                # With work in flight, poll in short ticks so that settled batches are
                # committed promptly; a blocking drain per idle poll would put two broker
                # round trips back into every cycle at moderate load.
                busy = self._staged is not None or committer.in_flight > 0
                try:
                    poll = client.poll(BUSY_TICK_MS if busy else settings.poll_timeout_ms, settings.max_poll_records)
                except RegistrationRefused as exc:  # the group moves on: the next poll rejoins
                    log.warning("%s; nothing of that poll is stored, the partitions come back through the rejoin", exc)
                    continue
                self.health.loop_turned = time.monotonic()
                self.health.broker_answered = True
                # Stage the new poll before completing the previous one: its WAL write and
                # fsync ran while this poll waited on the network.
                staged = self._steps.stage(poll, self.ownership.homes) if poll else None
                self._complete_staged()
                self._staged = staged
                committer.poll()
                if self._applier is not None:
                    if time.monotonic() >= self._floor_due:
                        self._floor_due = time.monotonic() + FLOOR_REFRESH_S
                        self.ownership.refresh_floor()
                    self._applier.check()
                # Only as a member: the client then knows the topics' metadata, and a broker
                # that refuses us (exit 7) is never waited on for it.
                if self._group_wals is not None and self.health.member:
                    self._group_wals.refresh_if_due(client)
                metrics.maybe_log(client.lag)
            self.drain()
        except _FATAL_ERRORS as exc:
            return self._fatal(exc)
        finally:
            metrics.maybe_log(client.lag, force=True)
        return ExitCode.OK

    def _fatal(self, exc: BaseException) -> ExitCode:
        """The exit code and the one line for an error that ends the service (_FATAL)."""
        code, line = next((code, line) for kinds, code, line in _FATAL if isinstance(exc, kinds))
        if code == ExitCode.WAL_FATAL:
            self.health.wal_failed = str(exc)
        log.critical(line, exc)
        return code

    def forget_refused_commits(self) -> None:
        """At an assignment: what a refused commit left uncommitted, the ownership counted."""
        self._committer.forget_refused()

    def _keep_from(self) -> int | None:
        """The lowest seq the WAL keeps whatever the store holds (consumer.store.applier): the
        first whose offset is not committed, by this run's batches or as of the last
        assignment; 0 (everything) before the first assignment."""
        if not self._serving:
            return 0
        floors = [floor for floor in (self.ownership.floor, self._committer.floor) if floor is not None]
        return min(floors, default=None)

    def _durable(self, rows: bytes, runs: list[tuple[str, int, int]], results: list[AppendResult]) -> None:
        if self._applier is not None:
            self._applier.submit(rows, runs, results)

    def _complete_staged(self) -> None:
        if self._staged is not None:
            staged, self._staged = self._staged, None
            batch, counts, timings = self._steps.complete(staged)
            self._recorder.record(counts, timings)
            self._committer.submit(batch)

    def _committed(self, commits: Commits) -> None:
        """The broker confirmed these commits: the handoff's hint, and the gauges."""
        self.ownership.committed(commits)
        for (topic, partition), (offset, _) in commits.items():
            self.prom.committed_offset.labels(topic, str(partition)).set(offset)

    def _observe_query(self, path: str, status: int, seconds: float) -> None:
        route = query_route(path)
        self.prom.queries.labels(route, str(status)).inc()
        self.prom.query_seconds.labels(route).observe(seconds)

    def _commit_result(self, seconds: float, ok: bool) -> None:
        if ok:
            self.prom.commit_seconds.observe(seconds)
        else:
            self.prom.commit_failures.inc()

    def _sample_gauges(self) -> None:
        prom = self.prom
        prom.wal_last_seq.set(self.wal.last_seq)
        for seconds in self.wal.take_fsync_seconds():
            prom.fsync_seconds.observe(seconds)
        prom.dedup_keys.set(self.wal.dedup_keys)
        prom.dedup_bytes.set(self.wal.dedup_bytes())
        prom.batches_in_flight.set(self._committer.in_flight)
        prom.deliveries_in_flight.set(self._committer.deliveries_pending)
        sizes = [entry.stat().st_size for entry in os.scandir(self.wal.directory) if entry.name.endswith(".wal")]
        prom.wal_segments.set(len(sizes))
        prom.wal_bytes.set(sum(sizes))
        if self._applier is not None:
            prom.store_applied_seq.set(self._applier.applied_seq)

    def drain(self) -> int:
        """Complete the staged batch, then flush and commit everything in flight
        (consumer.ingest.commits.Committer.drain). Returns how many batches were drained."""
        self._complete_staged()
        return self._committer.drain()
