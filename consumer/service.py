"""The service loop: connect, poll, process (consumer.pipeline), commit, repeat.

Exit codes (docs/operations.md): 0 stopped by SIGTERM/SIGINT after draining;
2 the WAL directory is unusable (locked by another instance); 3 fatal WAL error
(fsync/write failure, corruption): nothing of the batch is committed, a restart
recovers from the log; 4 acks or dead letters could not be delivered (nothing committed);
5 Kafka stayed unreachable beyond kafka-python's own timeouts (nothing uncommitted is lost).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, NoBrokersAvailable
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.config import Settings
from consumer.events import Decoder
from consumer.metrics import Metrics
from consumer.pipeline import BatchReport, DeliveryFailed, Pipeline, StagedBatch, settled
from walcore import Wal, WalCorruption, WalFailed, WalLocked

log = logging.getLogger("tidal.consumer")
T = TypeVar("T")

EXIT_OK = 0
EXIT_WAL_UNUSABLE = 2
EXIT_WAL_FATAL = 3
EXIT_DELIVERY = 4
EXIT_KAFKA = 5
MAX_INFLIGHT_BATCHES = 4
BUSY_TICK_MS = 5


class Backoff:
    """Exponential backoff with a cap, waiting on the stop event (so SIGTERM cuts it short)."""

    def __init__(self, stop: threading.Event, first: float = 0.2, cap: float = 10.0) -> None:
        self._stop = stop
        self._first = first
        self._cap = cap
        self._next = first

    def wait(self) -> bool:
        """Sleep the next interval; False when a stop was requested meanwhile."""
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return not self._stop.wait(delay)

    def reset(self) -> None:
        self._next = self._first


class Reconcile(ConsumerRebalanceListener):
    """kafka-python 2.x calls this inside poll(), on the service thread, between batches:
    at revocation the service drains (flushes acks, commits synchronously) every batch
    still in flight before the partitions go.

    On assignment the positions come from the committed offsets (or ``earliest``), and
    deliberately never skip ahead to what the WAL holds: records the WAL stored but
    whose offsets were not committed (a crash between fsync and commit) must be consumed
    again so that their acks are published again. The WAL recognises each of them by
    its source position and answers with the original seq without storing it twice.
    """

    def __init__(self, service: Service) -> None:
        self._service = service

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._service.drain()
        log.info("partitions revoked: %s (every consumed batch durable and acked first; its offsets committed "
                 "unless a warning above says otherwise)", _names(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", _names(assigned))
        stored = self._service.wal.source_offsets()
        for tp in sorted(assigned):
            last = stored.get((tp.topic, tp.partition))
            if last is not None:
                log.info("%s:%d: the WAL holds offsets up to %d; any of them consumed again is acked with "
                         "its original seq, not stored twice", tp.topic, tp.partition, last)


def _names(partitions: set[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)) or "none"


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.wal: Wal
        self.consumer: Any = None
        self.producer: Any = None
        # Batches made durable whose acks may still be on their way; committed in order
        # once settled. Pipelining this saves two broker round trips per batch.
        self._inflight: deque[BatchReport] = deque()
        self._staged: StagedBatch | None = None  # submitted to the WAL, acks not yet sent
        # Offsets sent by commit_async and not yet confirmed by the broker: the drain
        # commits them again, synchronously, so that a lost async commit (a broker
        # outage, a connection reset) is never the last word before a stop or a revocation.
        self._unconfirmed: dict[TopicPartition, OffsetAndMetadata] = {}
        self._pipeline: Pipeline

    def request_stop(self, signum: int = 0, _frame: object = None) -> None:
        if signum:
            log.info("received %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        self.stop.set()

    def _connect(self, what: str, factory: Callable[[], T]) -> T | None:
        backoff = Backoff(self.stop, first=0.5, cap=15.0)
        while not self.stop.is_set():
            try:
                return factory()
            except (NoBrokersAvailable, KafkaError) as exc:
                log.warning("cannot reach Kafka at %s for the %s (%s); retrying",
                            self.settings.bootstrap_servers, what, exc)
                if not backoff.wait():
                    break
        return None

    def run(self) -> int:
        settings = self.settings
        try:
            self.wal = Wal.open(settings.wal_dir, settings.wal.to_wal_config())
        except WalLocked as exc:
            log.error("%s", exc)
            return EXIT_WAL_UNUSABLE
        except WalCorruption as exc:
            log.critical("%s; run `walcore verify %s` and see docs/operations.md", exc, settings.wal_dir)
            return EXIT_WAL_FATAL
        try:
            return self._run_connected()
        finally:
            self.wal.close()
            log.info("WAL closed at seq %d", self.wal.last_seq)

    def _run_connected(self) -> int:
        settings = self.settings
        common = {"bootstrap_servers": settings.bootstrap_servers.split(","), **settings.kafka}
        self.producer = self._connect("producer", lambda: KafkaProducer(
            acks="all", linger_ms=2, client_id=f"tidal-{self.wal.wal_id}", **common))
        if self.producer is None:
            return EXIT_OK
        self.consumer = self._connect("consumer", lambda: KafkaConsumer(
            group_id=settings.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=settings.max_poll_records, client_id=f"tidal-{self.wal.wal_id}", **common))
        if self.consumer is None:
            self.producer.close()
            return EXIT_OK
        self.consumer.subscribe(settings.topics, listener=Reconcile(self))
        self._pipeline = pipeline = Pipeline(
            self.wal, Decoder(settings.schema(), settings.max_message_bytes), self.producer,
            reply_topic=settings.reply_topic, dlq_topic=settings.dlq_topic)
        self._metrics = metrics = Metrics(settings.metrics_interval_s)
        log.info("consuming %s as group %s into WAL %s (%s); acks to %s, rejects to %s",
                 ",".join(settings.topics), settings.group_id, settings.wal_dir, self.wal.wal_id,
                 settings.reply_topic, settings.dlq_topic)
        # Long-lived objects (the dedup window holds up to millions of keys) would make
        # every full GC pass walk them; freeze what start-up built and collect less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 50)
        code = EXIT_OK
        try:
            while not self.stop.is_set():
                # With work in flight, poll in short ticks so that settled batches are
                # committed promptly; a blocking drain per idle poll would put two broker
                # round trips back into every cycle at moderate load.
                busy = self._staged is not None or bool(self._inflight)
                polled = self.consumer.poll(timeout_ms=BUSY_TICK_MS if busy else settings.poll_timeout_ms,
                                            max_records=settings.max_poll_records)
                # Stage the new poll before completing the previous one: its WAL write and
                # fsync ran while this poll waited on the network.
                staged = pipeline.stage(polled) if polled else None
                self._complete_staged()
                self._staged = staged
                if len(self._inflight) > MAX_INFLIGHT_BATCHES:
                    self.drain()  # back-pressure: acks are not keeping up
                else:
                    self._commit_settled()
                metrics.maybe_log(self.consumer)
            self.drain()
        except (WalFailed, WalCorruption) as exc:
            log.critical("fatal WAL error, nothing of the batch is committed: %s", exc)
            code = EXIT_WAL_FATAL
        except DeliveryFailed as exc:
            log.critical("%s", exc)
            code = EXIT_DELIVERY
        except KafkaError as exc:
            # kafka-python reconnects by itself; this is an outage longer than its own
            # timeouts (e.g. max_block_ms for a full send buffer). Nothing unacked is committed.
            log.critical("Kafka unavailable beyond the client's timeouts (%r); nothing uncommitted is lost, "
                         "restart when the broker is back", exc)
            code = EXIT_KAFKA
        finally:
            metrics.maybe_log(self.consumer, force=True)
            # Never commit on close: everything that may be committed already was.
            self.consumer.close(autocommit=False)
            self.producer.close()
        return code

    def _take_settled(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Pop the leading batches whose deliveries all succeeded; their merged offsets."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        while self._inflight and settled(self._inflight[0]):
            offsets.update(self._inflight.popleft().offsets)  # later batches carry higher offsets
        return offsets

    def _commit_settled(self) -> None:
        """Commit (async) the offsets of the leading settled batches."""
        offsets = self._take_settled()
        if offsets:
            self._unconfirmed.update(offsets)
            self.consumer.commit_async(offsets, callback=self._async_commit_done)

    def _async_commit_done(self, offsets: dict[TopicPartition, OffsetAndMetadata], response: object) -> None:
        # kafka-python runs this inside poll() (or close()), on the service thread.
        if isinstance(response, Exception):
            log.warning("async offset commit failed (%r); the next commit, or the drain's synchronous "
                        "one, covers it", response)
            return
        for tp, offset in offsets.items():
            if self._unconfirmed.get(tp) == offset:  # not superseded by a later commit meanwhile
                del self._unconfirmed[tp]

    def _complete_staged(self) -> None:
        if self._staged is not None:
            staged, self._staged = self._staged, None
            report = self._pipeline.complete(staged)
            self._metrics.record(report)
            self._inflight.append(report)

    def drain(self) -> None:
        """Complete the staged batch, flush every ack and dead letter in flight, then
        commit synchronously."""
        self._complete_staged()
        if self._inflight:
            self.producer.flush()
        offsets = {**self._unconfirmed, **self._take_settled()}  # later batches carry higher offsets
        if self._inflight:
            raise DeliveryFailed("an ack/DLQ delivery is still pending after flush(); nothing of it is committed")
        if offsets:
            self._commit(offsets)
        # Committed, or refused and logged: either way these partitions may be about to
        # go, and what was not committed is durable and recognised when consumed again.
        self._unconfirmed.clear()

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        backoff = Backoff(self.stop, first=0.1, cap=5.0)
        deadline = time.monotonic() + self.settings.commit_retry_max_s
        while True:
            try:
                self.consumer.commit(offsets)
                return
            except CommitFailedError as exc:
                # The group rebalanced under us; the records are durable and acked, so a
                # redelivery (to us or to another instance) is recognised, not lost.
                log.warning("offset commit refused after a rebalance (%s); the batch is durable and acked", exc)
                return
            except KafkaError as exc:
                if time.monotonic() > deadline:
                    log.warning("offset commit still failing after %.0fs (%s); the next commit covers it",
                                self.settings.commit_retry_max_s, exc)
                    return
                log.warning("offset commit failed (%s); retrying", exc)
                if not backoff.wait():
                    return
