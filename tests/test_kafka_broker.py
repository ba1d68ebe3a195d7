"""The real broker every integration test uses: produce and consume over TCP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

pytestmark = pytest.mark.kafka


def test_produce_then_consume_over_tcp(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    topic = make_topic("smoke", partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sent = [producer.send(topic, key=str(i).encode(), value=f"v{i}".encode()).get(timeout=30) for i in range(20)]
    producer.close()
    assert {m.partition for m in sent} <= {0, 1}
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20_000,
    )
    values = set()
    for message in consumer:
        values.add(message.value)
        if len(values) == 20:
            break
    consumer.close()
    assert values == {f"v{i}".encode() for i in range(20)}


def test_make_topic_creates_a_fresh_empty_topic_with_the_partitions_asked(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("fresh", partitions=3)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    ends = consumer.end_offsets(partitions)
    consumer.close()
    assert [tp.partition for tp in partitions] == [0, 1, 2]
    assert set(ends.values()) == {0}  # nothing of another test's in it
