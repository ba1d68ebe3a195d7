"""The kafka-python 2.3 implementation of consumer.kafka.adapter.KafkaAdapter.

Why kafka-python 2.3: its rebalance listener runs inside ``poll()`` on the caller's
thread, where the service can finish every batch in flight (fsync, acks flushed,
offsets committed synchronously) before the partitions go. Records pass through
unchanged: a ConsumerRecord already has the attributes of a PolledRecord, and a
TopicPartition is a (topic, partition) tuple.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError,
    KafkaConfigurationError,
    KafkaError,
    SaslAuthenticationFailedError,
    UnsupportedCodecError,
)
from kafka.partitioner import DefaultPartitioner
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.errors import CodecMissing, CommitRefused, KafkaOptionInvalid, KafkaRefused, KafkaUnavailable
from consumer.kafka.adapter import (
    HANDOFF_TIMEOUT_S,
    Connection,
    ListenerRelay,
    Partition,
    RebalanceListener,
    Refusals,
)
from consumer.kafka.kafka_python.options import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS
from consumer.protocol.types import Commits, Poll

log = logging.getLogger(__name__)


class _Delivery:
    __slots__ = ("_future",)

    def __init__(self, future: FutureRecordMetadata) -> None:
        self._future = future

    def done(self) -> bool:
        return bool(self._future.is_done)

    def error(self) -> BaseException | None:
        return self._future.exception if self._future.failed() else None

    def position(self) -> tuple[int, int] | None:
        if not self._future.succeeded():
            return None
        return self._future.value.partition, self._future.value.offset


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python ships no type hints
    """kafka-python's listener interface, relayed (consumer.kafka.adapter.ListenerRelay)."""

    def __init__(self, relay: ListenerRelay) -> None:
        self._relay = relay

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._relay.call("revoked", [(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._relay.call("assigned", [(tp.topic, tp.partition) for tp in assigned])


def _watch_refusals() -> _RefusalWatch:
    """The one watch of this process, on ``kafka.conn``: that logger is set to ERROR and
    stops propagating, so kafka-python's own connection errors reach only the watch (the
    service logs one line per retry itself; TIDAL_KAFKA_LOG_LEVEL shows kafka-python's)."""
    conn_log = logging.getLogger("kafka.conn")
    for handler in conn_log.handlers:
        if isinstance(handler, _RefusalWatch):
            return handler
    watch = _RefusalWatch()
    conn_log.addHandler(watch)
    if conn_log.getEffectiveLevel() > logging.ERROR:
        conn_log.setLevel(logging.ERROR)
        conn_log.propagate = False
    return watch


def _to_kafka(commits: Commits) -> dict[TopicPartition, OffsetAndMetadata]:
    # Metadata goes out NUL-terminated, byte for byte as confluent-kafka writes it (its
    # length counts the C terminator): librdkafka copies read metadata by its length, then
    # reads it as a C string, so a mark without the NUL was read with whatever bytes
    # followed it in memory (a mixed group's librdkafka members lost marks, or failed).
    return {
        TopicPartition(topic, partition): OffsetAndMetadata(offset, metadata + "\x00" if metadata else "", -1)
        for (topic, partition), (offset, metadata) in commits.items()
    }


HANDOFF_TIMEOUT_MS = int(HANDOFF_TIMEOUT_S * 1000)  # kafka-python counts milliseconds


class _RefusalWatch(logging.Handler):
    """kafka-python reports a rejected SASL login or an untrusted certificate only in its
    own log: this handler on ``kafka.conn`` notes each refusal (the exception kafka-python
    closes the connection with) in the adapter's Refusals."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.refusals = Refusals("sasl_* / ssl_*")

    def emit(self, record: logging.LogRecord) -> None:
        refused = (
            [arg for arg in record.args or () if isinstance(arg, _REFUSALS)] if isinstance(record.args, tuple) else []
        )
        text = record.getMessage() if not refused else ""
        if refused or "CERTIFICATE_VERIFY_FAILED" in text:
            self.refusals.note(repr(refused[0]) if refused else "TLS: the broker's certificate is not trusted")


_REFUSALS = (SaslAuthenticationFailedError, ssl.SSLError)


class KafkaPythonAdapter:
    def __init__(
        self,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        reader_options: dict[str, Any],
        refusals: Refusals | None = None,
        refusal_grace_s: float = 30.0,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._refusals = refusals
        self._refusal_grace_s = refusal_grace_s
        self._relay: ListenerRelay | None = None
        self._reader_options = reader_options
        self._reader: KafkaConsumer | None = None  # reads the reply topic at handoffs; made when first needed

    @classmethod
    def connect(cls, how: Connection) -> KafkaPythonAdapter:
        """Create both clients; KafkaUnavailable when the broker cannot be reached,
        KafkaRefused when it refuses us (an untrusted certificate fails at once; rejected
        credentials once they persist for ``refusal_grace_s``, checked by ``poll``)."""
        refusals = _watch_refusals().refusals
        try:
            return cls._connect(how, how.bootstrap_servers.split(","), refusals)
        except ssl.SSLError as exc:
            raise KafkaRefused(f"TLS: {exc} (is ssl_cafile the CA that signed the broker's certificate?)") from exc

    @classmethod
    def _connect(cls, how: Connection, servers: list[str], refusals: Refusals) -> KafkaPythonAdapter:
        try:
            producer = KafkaProducer(
                **{"client_id": how.client_id, **PRODUCER_DEFAULTS, **how.producer_options},
                bootstrap_servers=servers,
                acks="all",
            )
        except ssl.SSLError:
            raise  # an untrusted certificate (also a ValueError): not an option kafka-python refused
        except (KafkaConfigurationError, TypeError, ValueError, AssertionError) as exc:
            raise KafkaOptionInvalid(
                f"the Kafka producer refused its options ([kafka], [kafka.producer]): {exc!r}"
            ) from exc
        except KafkaError as exc:
            raise KafkaUnavailable(f"producer: {exc!r}") from exc
        try:
            consumer = KafkaConsumer(
                **{"client_id": how.client_id, **CONSUMER_DEFAULTS, **how.consumer_options},
                bootstrap_servers=servers,
                group_id=how.group_id,
                group_instance_id=how.group_instance_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=how.max_poll_records,
            )
        except ssl.SSLError:
            producer.close()
            raise
        except (KafkaConfigurationError, TypeError, ValueError, AssertionError) as exc:
            producer.close()
            raise KafkaOptionInvalid(
                f"the Kafka consumer refused its options ([kafka], [kafka.consumer]): {exc!r}"
            ) from exc
        except KafkaError as exc:
            producer.close()
            raise KafkaUnavailable(f"consumer: {exc!r}") from exc
        reader_options = {
            **how.consumer_options,
            "bootstrap_servers": servers,
            "client_id": f"{how.client_id}-handoff",
            "group_id": None,
            "enable_auto_commit": False,
        }
        return cls(consumer, producer, reader_options, refusals, how.refusal_grace_s)

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._relay = ListenerRelay(listener)
        self._consumer.subscribe(list(topics), listener=_Listener(self._relay))

    def poll(self, timeout_ms: int, max_records: int) -> Poll:
        try:
            records = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except UnsupportedCodecError as exc:
            raise CodecMissing(
                f"{exc} (kafka-python decompresses snappy, lz4 and zstd with the python-snappy, "
                "lz4 and zstandard packages, which tidal-consumer installs: is this environment "
                "missing one?)"
            ) from exc
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        if self._relay is not None:
            self._relay.raise_pending()
        if not records and self._refusals is not None and self._refusals.persisted(self._refusal_grace_s):
            raise KafkaRefused(f"{self._refusals.reason}, for {self._refusal_grace_s:.0f} s")
        return cast(Poll, records)  # {TopicPartition (a (topic, partition) tuple): [ConsumerRecord]}

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> _Delivery:
        try:
            return _Delivery(
                self._producer.send(topic, key=key, value=value, headers=list(headers) if headers else None)
            )
        except KafkaError as exc:  # e.g. the send buffer stayed full beyond max_block_ms
            raise KafkaUnavailable(repr(exc)) from exc

    def flush(self) -> None:
        try:
            self._producer.flush()
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def commit_async(self, commits: Commits, on_done: Callable[[Commits, BaseException | None], None]) -> None:
        def done(_offsets: object, response: object) -> None:
            on_done(commits, response if isinstance(response, BaseException) else None)

        try:
            self._consumer.commit_async(_to_kafka(commits), callback=done)
        except KafkaError as exc:
            on_done(commits, exc)

    def commit_sync(self, commits: Commits) -> None:
        try:
            self._consumer.commit(_to_kafka(commits))
        except CommitFailedError as exc:
            raise CommitRefused(str(exc)) from exc
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def committed(
        self, partitions: Sequence[Partition], timeout_s: float | None = None
    ) -> dict[Partition, tuple[int, str] | None]:
        timeout_ms = HANDOFF_TIMEOUT_MS if timeout_s is None else int(timeout_s * 1000)
        try:
            found = {
                (topic, partition): self._consumer.committed(
                    TopicPartition(topic, partition), metadata=True, timeout_ms=timeout_ms
                )
                for topic, partition in partitions
            }
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        return {
            tp: None if meta is None else (meta.offset, (meta.metadata or "").partition("\x00")[0])
            for tp, meta in found.items()
        }

    def partitions(self, topic: str, timeout_s: float) -> list[int]:
        # From the metadata the subscribed consumer keeps (no request while it knows the topic).
        try:
            return sorted(self._consumer.partitions_for_topic(topic) or ())
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def watermarks(self, partitions: Sequence[Partition]) -> dict[Partition, tuple[int, int]]:
        if not partitions:
            return {}
        tps = [TopicPartition(topic, number) for topic, number in partitions]
        try:
            # On the handoff reader (no group): the group consumer is inside its rebalance callback.
            if self._reader is None:
                self._reader = KafkaConsumer(**self._reader_options)
            lows = self._reader.beginning_offsets(tps)
            highs = self._reader.end_offsets(tps)
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        return {(tp.topic, tp.partition): (lows[tp], highs[tp]) for tp in tps}

    def reply_partition(self, topic: str, key: bytes) -> int | None:
        """The partition the producer sends ``key`` to (its default partitioner); None
        while the topic's partitions are unknown."""
        partitions = self._producer.partitions_for(topic)
        if not partitions:
            return None
        ordered = sorted(partitions)
        return int(DefaultPartitioner()(key, ordered, ordered))

    def read_from(self, topic: str, partition: int, offset: int) -> list[bytes | None]:
        """Every message value of a partition from ``offset`` (or its earliest retained
        one) to its end as of this call."""
        try:
            if self._reader is None:
                self._reader = KafkaConsumer(**self._reader_options)
            reader = self._reader
            tp = TopicPartition(topic, partition)
            reader.assign([tp])
            end = reader.end_offsets([tp])[tp]
            start = max(offset, reader.beginning_offsets([tp])[tp])
            values: list[bytes | None] = []
            if start >= end:
                return values
            reader.seek(tp, start)
            deadline = time.monotonic() + HANDOFF_TIMEOUT_MS / 1000
            while reader.position(tp) < end:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"reading {topic}:{partition} from {start} to {end} took over {HANDOFF_TIMEOUT_MS / 1000:.0f} s"
                    )
                for messages in reader.poll(timeout_ms=200, max_records=10_000).values():
                    values.extend(message.value for message in messages if message.offset < end)
            return values
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def lag(self) -> dict[Partition, tuple[int, int]] | None:
        consumer = self._consumer
        found: dict[Partition, tuple[int, int]] = {}
        try:
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:
                    return None
                found[(tp.topic, tp.partition)] = (high, max(0, high - consumer.position(tp, timeout_ms=0)))
        except Exception:  # noqa: BLE001 - a progress line must never stop the service
            return None
        return found

    def close(self) -> None:
        # Never commit on close: everything that may be committed already was.
        self._consumer.close(autocommit=False)
        self._producer.close()
        if self._reader is not None:
            self._reader.close()
