"""How DurableProducer (consumer.client) talks to Kafka, per client library: one
``Link`` per backend, the same two duties for each.

* ``send``: produce one event; ``on_sent(topic, partition, offset)`` or ``on_failed(exc)``
  is called once the broker answered, from the library's own thread.
* ``read``: the next values on the reply topic (waiting at most ``timeout_s``), read from
  its end as of the link's creation: acks of this client's sends come after it.

Why two: kafka-python is pure Python, so its sender and fetcher compete for the
interpreter lock with the caller's own threads, and at thousands of sends a second that
queueing is most of the ack latency; librdkafka (``backend="confluent"``) sends and
fetches on its own native threads (docs/performance.md has both figures). Both use the
murmur2 partitioner, so an entity's events land on the same partition whichever client
a producer runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

REPLY_TOPIC_WAIT_S = 30.0  # a reply topic that does not show up by then does not exist

Sent = Callable[[str, int, int], None]
Failed = Callable[[BaseException], None]


class Link(Protocol):
    def send(self, topic: str, key: bytes, value: bytes, on_sent: Sent, on_failed: Failed) -> None: ...

    def read(self, timeout_s: float) -> list[bytes | None]: ...

    def flush(self, timeout: float | None) -> None: ...

    def close(self) -> None:
        """Release the clients (after ``flush``; no ``read`` runs any more)."""


def _missing(reply_topic: str, bootstrap: object) -> ValueError:
    return ValueError(f"reply topic {reply_topic!r} does not exist (bootstrap {bootstrap})")


class KafkaPythonLink:
    def __init__(self, bootstrap_servers: str | list[str], reply_topic: str, options: dict[str, Any]) -> None:
        # Imported here: the confluent link needs no kafka-python.
        from kafka import KafkaConsumer, KafkaProducer  # noqa: PLC0415
        from kafka.structs import TopicPartition  # noqa: PLC0415

        # Each option goes to the client that has it (linger_ms, max_block_ms: the producer;
        # fetch options: the reader; security, client_id: both): kafka-python's consumer
        # refuses a producer option and the other way round.
        producer_names = {*KafkaProducer.DEFAULT_CONFIG, *KafkaProducer.DEPRECATED_CONFIGS}
        producer_options = {name: value for name, value in options.items() if name in producer_names}
        reader_options = {name: value for name, value in options.items() if name in KafkaConsumer.DEFAULT_CONFIG}
        unknown = sorted(set(options) - set(producer_options) - set(reader_options))
        if unknown:
            raise ValueError(
                f"kafka-python refused the DurableProducer options: {', '.join(unknown)} (neither "
                f"KafkaProducer nor KafkaConsumer has them)"
            )
        # linger_ms=1: at thousands of sends a second, fewer and larger produce requests
        # (client and broker CPU) for at most 1 ms of latency; overridable.
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", **{"linger_ms": 1, **producer_options}
        )
        self._reader = KafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, **reader_options
        )
        deadline = time.monotonic() + REPLY_TOPIC_WAIT_S
        while not (found := self._reader.partitions_for_topic(reply_topic)):
            if time.monotonic() > deadline:
                self.close()
                raise _missing(reply_topic, bootstrap_servers)
            self._reader.poll(timeout_ms=100)  # refreshes metadata while waiting
        partitions = [TopicPartition(reply_topic, p) for p in sorted(found)]
        self._reader.assign(partitions)
        # end_offsets + seek rather than seek_to_end: kafka-python 2.3's position() can
        # wait forever on a partition of a just-created topic whose leader it has not
        # learned yet.
        for tp, end in self._reader.end_offsets(partitions).items():
            self._reader.seek(tp, end)

    def send(self, topic: str, key: bytes, value: bytes, on_sent: Sent, on_failed: Failed) -> None:
        sent = self._producer.send(topic, value=value, key=key)
        sent.add_callback(lambda meta: on_sent(meta.topic, meta.partition, meta.offset))
        sent.add_errback(on_failed)

    def read(self, timeout_s: float) -> list[bytes | None]:
        polled = self._reader.poll(timeout_ms=int(timeout_s * 1000))
        return [message.value for messages in polled.values() for message in messages]

    def flush(self, timeout: float | None) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close()
        self._reader.close()


class ConfluentLink:
    """librdkafka: delivery reports are served by a thread of the link's own (they run
    only inside ``Producer.poll``); the reply reader waits for the first message only
    (consumer.kafka.confluent.consume_ready, as the service's adapter)."""

    def __init__(self, bootstrap_servers: str | list[str], reply_topic: str, options: dict[str, Any]) -> None:
        try:
            from confluent_kafka import (  # noqa: PLC0415 - the optional librdkafka extra
                Consumer,
                KafkaError,
                KafkaException,
                Producer,
            )
            from confluent_kafka import TopicPartition as Partition  # noqa: PLC0415

            from consumer.kafka.confluent import consume_ready, produce_waiting  # noqa: PLC0415 - imports confluent_kafka
        except ImportError:
            raise ValueError(
                "backend: 'confluent' needs confluent-kafka: pip install 'tidal-consumer[librdkafka]'"
            ) from None
        self._KafkaException = KafkaException
        self._produce, self._consume = produce_waiting, consume_ready
        bootstrap = bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)
        common = {"bootstrap.servers": bootstrap, **options}
        try:
            self._producer = Producer({"acks": "all", "linger.ms": 1, "partitioner": "murmur2_random", **common})
            # A group id librdkafka wants, never joined or committed to: partitions are assigned.
            self._reader = Consumer(
                {
                    "group.id": f"tidal-durable-producer-{id(self):x}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 100,
                    "fetch.queue.backoff.ms": 1,
                    **common,
                }
            )
        except KafkaException as exc:  # an unknown or invalid option: librdkafka names it
            raise ValueError(f"librdkafka refused the DurableProducer options: {exc.args[0].str()}") from None
        self._closed = threading.Event()
        self._deliveries = threading.Thread(target=self._serve_deliveries, name="tidal-delivery-reports", daemon=True)
        self._deliveries.start()
        deadline = time.monotonic() + REPLY_TOPIC_WAIT_S
        while True:
            try:
                metadata = self._reader.list_topics(reply_topic, timeout=5).topics[reply_topic]
                if metadata.error is not None:
                    raise KafkaException(metadata.error)
                # The ends now, before anything is sent (a just-created topic may not have
                # its leaders yet: retried).
                self._reader.assign(
                    [
                        Partition(
                            reply_topic, p, self._reader.get_watermark_offsets(Partition(reply_topic, p), timeout=5)[1]
                        )
                        for p in sorted(metadata.partitions)
                    ]
                )
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    self.close()
                    if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise _missing(reply_topic, bootstrap) from None
                    raise ValueError(f"cannot read reply topic {reply_topic!r}: {exc.args[0].str()}") from None
                time.sleep(0.1)  # metadata is not there yet; librdkafka refreshes it meanwhile

    def _serve_deliveries(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def send(self, topic: str, key: bytes, value: bytes, on_sent: Sent, on_failed: Failed) -> None:
        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                on_failed(self._KafkaException(error))
            else:
                on_sent(message.topic(), message.partition(), message.offset())

        self._produce(self._producer, topic, value, key, delivered)

    def read(self, timeout_s: float) -> list[bytes | None]:
        values = []
        for message in self._consume(self._reader, 10_000, timeout_s):
            error = message.error()
            if error is None:
                values.append(message.value())
            else:  # librdkafka retries by itself; say what it met
                log.warning("reading the reply topic: %s", error.str())
        return values

    def flush(self, timeout: float | None) -> None:
        self._producer.flush(-1 if timeout is None else timeout)

    def close(self) -> None:
        self._closed.set()
        self._deliveries.join()
        self._reader.close()


LINKS: dict[str, Callable[[str | list[str], str, dict[str, Any]], Link]] = {
    "kafka-python": KafkaPythonLink,
    "confluent": ConfluentLink,
}
