"""DurableProducer's transport on confluent-kafka (consumer.kafka.transport)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as Partition

from consumer.kafka.confluent.calls import consume_ready, produce_waiting
from consumer.kafka.transport import REPLY_TOPIC_WAIT_S, Failed, Sent, missing_reply_topic

log = logging.getLogger(__name__)


class ConfluentTransport:
    """librdkafka: delivery reports are served by a thread of the transport's own (they run
    only inside ``Producer.poll``); the reply reader waits for the first message only
    (consumer.kafka.confluent.calls.consume_ready, as the service's adapter)."""

    def __init__(self, bootstrap_servers: str | list[str], reply_topic: str, options: dict[str, Any]) -> None:
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
                    "isolation.level": "read_committed",  # librdkafka's default, said: fenced acks are no answer
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
                        raise missing_reply_topic(reply_topic, bootstrap) from None
                    raise ValueError(f"cannot read reply topic {reply_topic!r}: {exc.args[0].str()}") from None
                time.sleep(0.1)  # metadata is not there yet; librdkafka refreshes it meanwhile

    def _serve_deliveries(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def send(self, topic: str, key: bytes, value: bytes, on_sent: Sent, on_failed: Failed) -> None:
        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                on_failed(KafkaException(error))
            else:
                on_sent(message.topic(), message.partition(), message.offset())

        produce_waiting(self._producer, topic, value, key, delivered)

    def read(self, timeout_s: float) -> list[bytes | None]:
        values = []
        for message in consume_ready(self._reader, 10_000, timeout_s):
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
