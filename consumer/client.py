"""DurableProducer: send a signal event, learn the durable sequence number it got.

    with DurableProducer(bootstrap_servers="127.0.0.1:9092", topic="signals",
                         reply_topic="signals.acks") as producer:
        result = producer.send_and_wait({"entity_id": 42, "signal_type": "view",
                                         "weight": 1.0, "timestamp_nanos": time.time_ns()})
        print(result.wal_id, result.seq, result.duplicate)

How it correlates (docs/acks.md): the broker tells each send its (partition, offset);
the service acks ranges of (topic, partition, offset) after its fsync. One background
thread per client reads the reply topic, starting at its end as of construction, and
resolves the matching futures. An ack may arrive before the send's own metadata
callback has run; recent acks are kept briefly so that order does not matter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, NamedTuple

from pydantic import ValidationError

from consumer.kafka import backends
from consumer.protocol.acks import Ack, NotAnAck, Rejection, parse_ack
from consumer.protocol.events import SignalEvent, describe

log = logging.getLogger(__name__)


# How many acks entirely below an offset the race lookup passes before giving up
# (tolerates redelivery acks, which repeat older offsets, arriving out of order).
RECENT_SCAN_SLACK = 64


class DurableResult(NamedTuple):
    wal_id: str
    seq: int
    duplicate: bool  # True: a producer retry of an event stored earlier; seq is the original's
    partition: int
    offset: int


class InvalidEvent(ValueError):
    """The event does not match the wire format; it was not sent."""


class EventRejected(Exception):
    """The service rejected the event to its DLQ; ``reason`` says why."""

    def __init__(self, partition: int, offset: int, reason: str) -> None:
        self.partition, self.offset, self.reason = partition, offset, reason
        super().__init__(f"event at partition {partition} offset {offset} was rejected to the DLQ: {reason}")


class AckTimeout(TimeoutError):
    """No ack arrived in time (is tidal-consumer running and consuming this topic?)."""


class SendFailed(Exception):
    """Kafka did not accept the event (the broker error is the cause)."""


class _Pending(NamedTuple):
    future: Future[DurableResult]
    deadline: float


class DurableProducer:
    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str,
        reply_topic: str,
        *,
        ack_timeout: float = 30.0,
        signal_types: set[str] | None = None,
        backend: str = "kafka-python",
        **kafka_options: Any,
    ) -> None:
        """``signal_types``, when given, is checked locally too (else only the service knows
        the schema). ``backend``: the Kafka client, "kafka-python" or "confluent"
        (librdkafka: a lower ack latency, docs/performance.md; needs the [librdkafka]
        extra). ``kafka_options`` are in the backend's own names (kafka-python's keywords;
        librdkafka's dotted names, e.g. ``**{"security.protocol": "SASL_SSL"}``); kafka-python
        gets each in whichever of its producer and reply reader has it (ValueError when
        neither does), librdkafka gets all in both (it ignores, with a warning, a property
        of the other kind of client)."""
        try:
            backends.check(backend)
        except ValueError as exc:
            raise ValueError(f"backend: {exc}") from None
        self.topic = topic
        self.reply_topic = reply_topic
        self.ack_timeout = ack_timeout
        self._signal_types = signal_types
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int, int], _Pending] = {}
        self._deadlines: deque[tuple[float, tuple[str, int, int]]] = deque()  # in send order
        # (topic, partition) -> recent (arrival, lowest offset, highest offset, ack), for acks
        # that beat their send's callback, and the highest offset any ack has covered: a
        # send beyond it cannot have been acked yet, so only that race looks at recent acks.
        self._recent: dict[tuple[str, int], deque[tuple[float, int, int, Ack]]] = {}
        self._highest: dict[tuple[str, int], int] = {}
        # Messages on the reply topic that are not well-formed acks: skipped, never fatal.
        self.skipped_replies = 0
        self._closed = threading.Event()
        self._transport = backends.open_transport(backend, bootstrap_servers, reply_topic, kafka_options)
        self._thread = threading.Thread(target=self._read_acks, name="tidal-ack-reader", daemon=True)
        self._thread.start()

    # -- sending --------------------------------------------------------------------------

    def send(self, event: SignalEvent | dict[str, Any], key: bytes | None = None) -> Future[DurableResult]:
        """Validate and send; the future resolves once the event is durable. Raises
        InvalidEvent at once for a bad event (nothing is sent), SendFailed when the client
        cannot take it (its send queue stayed full for 60 s). Default key: the entity id,
        so one entity's events keep their order on one partition."""
        if self._closed.is_set():
            raise RuntimeError("DurableProducer is closed")
        try:
            model = event if isinstance(event, SignalEvent) else SignalEvent.model_validate(event)
        except ValidationError as exc:
            raise InvalidEvent(describe(exc)) from None
        if self._signal_types is not None and model.signal_type not in self._signal_types:
            raise InvalidEvent(f"signal_type: unknown signal type {model.signal_type!r}")
        future: Future[DurableResult] = Future()
        deadline = time.monotonic() + self.ack_timeout
        try:
            self._transport.send(
                self.topic,
                key if key is not None else str(model.entity_id).encode(),
                model.model_dump_json(exclude_none=True).encode(),
                lambda topic, partition, offset: self._register(topic, partition, offset, future, deadline),
                lambda exc: future.set_exception(SendFailed(f"Kafka did not accept the event: {exc!r}")),
            )
        except Exception as exc:  # the client's send queue stayed full (or the client is unusable)
            raise SendFailed(f"Kafka did not take the event: {exc!r}") from exc
        return future

    def send_and_wait(
        self, event: SignalEvent | dict[str, Any], timeout: float | None = None, key: bytes | None = None
    ) -> DurableResult:
        return self.send(event, key).result(timeout if timeout is not None else self.ack_timeout + 5)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event sent so far is on the broker (not yet durable: the
        futures say when that is)."""
        self._transport.flush(timeout)

    def _register(
        self, topic: str, partition: int, offset: int, future: Future[DurableResult], deadline: float
    ) -> None:
        with self._lock:
            if offset <= self._highest.get((topic, partition), -1) and self._resolve_recent(
                topic, partition, offset, future
            ):
                return
            key = (topic, partition, offset)
            self._pending[key] = _Pending(future, deadline)
            self._deadlines.append((deadline, key))

    def _resolve_recent(self, topic: str, partition: int, offset: int, future: Future[DurableResult]) -> bool:
        """An ack that arrived before this send's callback. Acks come in offset order per
        partition (bar redeliveries), so look from the newest back and stop once acks lie
        well below the offset: the cost stays constant however many acks are kept."""
        below = 0
        for _, low, high, ack in reversed(self._recent.get((topic, partition), ())):
            if low <= offset <= high and _resolve_from(ack, offset, future):
                return True
            if high < offset:
                below += 1
                if below > RECENT_SCAN_SLACK:
                    return False
        return False

    # -- the reply reader thread --------------------------------------------------------------

    def _read_acks(self) -> None:
        while not self._closed.is_set():
            try:
                values = self._transport.read(0.1)
            except Exception:
                log.exception("reading acks from %s failed; retrying", self.reply_topic)
                self._closed.wait(1.0)
                continue
            now = time.monotonic()
            with self._lock:
                for value in values:
                    try:
                        self._on_ack(value, now)
                    except Exception:  # e.g. a future its caller cancelled: never stop the reader
                        log.exception("handling a message on %s failed; skipped", self.reply_topic)
                self._expire(now)

    def _on_ack(self, value: bytes | None, now: float) -> None:
        ack = parse_ack(value)
        if isinstance(ack, NotAnAck):
            self.skipped_replies += 1
            if self.skipped_replies == 1 or self.skipped_replies % 1000 == 0:
                log.warning(
                    "skipped a message on %s that is not an ack (%s; %d skipped so far): %r",
                    self.reply_topic,
                    ack.reason,
                    self.skipped_replies,
                    (value or b"")[:100],
                )
            return
        topic, partition = ack.topic, ack.partition
        if topic != self.topic:
            return
        spans = list(ack.spans())  # runs, never expanded: parse_ack bounds what they cover
        if not spans:
            return
        low, high = min(first for first, _ in spans), max(last for _, last in spans)
        self._recent.setdefault((topic, partition), deque()).append((now, low, high, ack))
        if high > self._highest.get((topic, partition), -1):
            self._highest[(topic, partition)] = high
        pending_pop = self._pending.pop
        for first, last in spans:
            for offset in range(first, last + 1):
                pending = pending_pop((topic, partition, offset), None)
                if pending is not None:
                    _resolve_from(ack, offset, pending.future)

    def _expire(self, now: float) -> None:
        # Deadlines are appended in send order with one timeout, so they ascend: only the
        # expired head is looked at, never the whole pending set.
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < now:
            key = deadlines.popleft()[1]
            pending = self._pending.pop(key, None)
            if pending is not None:
                topic, partition, offset = key
                pending.future.set_exception(
                    AckTimeout(
                        f"no ack for {topic}:{partition}@{offset} within {self.ack_timeout}s on {self.reply_topic} "
                        "(is tidal-consumer running and consuming this topic?)"
                    )
                )
        keep_after = now - max(10.0, self.ack_timeout)
        for recent in self._recent.values():
            while recent and recent[0][0] < keep_after:
                recent.popleft()

    # -- closing ------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Flush sends, stop the reader; futures still waiting fail with AckTimeout."""
        if self._closed.is_set():
            return
        self._transport.flush(timeout)
        self._closed.set()
        self._thread.join()
        with self._lock:
            for (topic, partition, offset), pending in self._pending.items():
                pending.future.set_exception(AckTimeout(f"closed before the ack for {topic}:{partition}@{offset}"))
            self._pending.clear()
            self._deadlines.clear()
        self._transport.close()

    def __enter__(self) -> DurableProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _resolve_from(ack: Ack, offset: int, future: Future[DurableResult]) -> bool:
    """Resolve ``future`` if ``ack`` covers ``offset``; True when it did."""
    outcome = ack.outcome(offset)
    if outcome is None:
        return False
    if isinstance(outcome, Rejection):
        future.set_exception(EventRejected(ack.partition, offset, outcome.reason))
    else:
        future.set_result(DurableResult(outcome.wal_id, outcome.seq, outcome.duplicate, ack.partition, offset))
    return True
