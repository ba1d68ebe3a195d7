"""The kafka-python 2.3 implementation of consumer.adapter.KafkaAdapter.

Why kafka-python 2.3: its rebalance listener runs inside ``poll()`` on the caller's
thread, where the service can finish every batch in flight (fsync, acks flushed,
offsets committed synchronously) before the partitions go. Records pass through
unchanged: a ConsumerRecord already has the attributes of a PolledRecord, and a
TopicPartition is a (topic, partition) tuple.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.adapter import RebalanceListener
from consumer.batch import Poll
from consumer.commits import Offsets
from consumer.errors import CommitRefused, KafkaUnavailable

log = logging.getLogger(__name__)


class _Delivery:
    __slots__ = ("_future",)

    def __init__(self, future: FutureRecordMetadata) -> None:
        self._future = future

    def done(self) -> bool:
        return bool(self._future.is_done)

    def error(self) -> BaseException | None:
        return self._future.exception if self._future.failed() else None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._listener.revoked(sorted((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._listener.assigned(sorted((tp.topic, tp.partition) for tp in assigned))


def _to_kafka(offsets: Offsets) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in offsets.items()}


class KafkaPythonAdapter:
    def __init__(self, consumer: KafkaConsumer, producer: KafkaProducer) -> None:
        self._consumer = consumer
        self._producer = producer

    @classmethod
    def connect(cls, *, bootstrap_servers: str, group_id: str, client_id: str, max_poll_records: int,
                options: dict[str, Any]) -> KafkaPythonAdapter:
        """Create both clients; KafkaUnavailable when the broker cannot be reached."""
        common = {"bootstrap_servers": bootstrap_servers.split(","), "client_id": client_id, **options}
        try:
            producer = KafkaProducer(acks="all", linger_ms=2, **common)
        except KafkaError as exc:
            raise KafkaUnavailable(f"producer: {exc!r}") from exc
        try:
            consumer = KafkaConsumer(group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                                     max_poll_records=max_poll_records, **common)
        except KafkaError as exc:
            producer.close()
            raise KafkaUnavailable(f"consumer: {exc!r}") from exc
        return cls(consumer, producer)

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._consumer.subscribe(list(topics), listener=_Listener(listener))

    def poll(self, timeout_ms: int, max_records: int) -> Poll:
        try:
            return self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> _Delivery:
        try:
            return _Delivery(self._producer.send(topic, key=key, value=value,
                                                 headers=list(headers) if headers else None))
        except KafkaError as exc:  # e.g. the send buffer stayed full beyond max_block_ms
            raise KafkaUnavailable(repr(exc)) from exc

    def flush(self) -> None:
        try:
            self._producer.flush()
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def commit_async(self, offsets: Offsets, on_done: Callable[[Offsets, BaseException | None], None]) -> None:
        def done(_offsets: object, response: object) -> None:
            on_done(offsets, response if isinstance(response, BaseException) else None)

        try:
            self._consumer.commit_async(_to_kafka(offsets), callback=done)
        except KafkaError as exc:
            on_done(offsets, exc)

    def commit_sync(self, offsets: Offsets) -> None:
        try:
            self._consumer.commit(_to_kafka(offsets))
        except CommitFailedError as exc:
            raise CommitRefused(str(exc)) from exc
        except KafkaError as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def lag(self) -> int | None:
        consumer = self._consumer
        total = 0
        try:
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:
                    return None
                total += max(0, high - consumer.position(tp, timeout_ms=0))
        except Exception:  # noqa: BLE001 - a progress line must never stop the service
            return None
        return total

    def close(self) -> None:
        # Never commit on close: everything that may be committed already was.
        self._consumer.close(autocommit=False)
        self._producer.close()
