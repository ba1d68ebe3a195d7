"""DurableProducer's transport on kafka-python (consumer.kafka.transport)."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from consumer.kafka.transport import REPLY_TOPIC_WAIT_S, Failed, Sent, missing_reply_topic


class KafkaPythonTransport:
    def __init__(self, bootstrap_servers: str | list[str], reply_topic: str, options: dict[str, Any]) -> None:
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
        # Committed acks only: an ack in a transaction the broker fenced (delivery =
        # "transactional", docs/acks.md) is not an answer.
        self._reader = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            **{"isolation_level": "read_committed", **reader_options},
        )
        deadline = time.monotonic() + REPLY_TOPIC_WAIT_S
        while not (found := self._reader.partitions_for_topic(reply_topic)):
            if time.monotonic() > deadline:
                self.close()
                raise missing_reply_topic(reply_topic, bootstrap_servers)
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
