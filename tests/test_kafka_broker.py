"""The real broker every integration test uses: produce and consume over TCP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka


def test_produce_then_consume_over_tcp(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    topic = make_topic("smoke", partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sent = [producer.send(topic, key=str(i).encode(), value=f"v{i}".encode()).get(timeout=30) for i in range(20)]
    producer.close()
    assert {m.partition for m in sent} <= {0, 1}
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}",
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=20_000)
    values = set()
    for message in consumer:
        values.add(message.value)
        if len(values) == 20:
            break
    consumer.close()
    assert values == {f"v{i}".encode() for i in range(20)}


def test_topics_from_make_topic_never_collide(make_topic: Callable[..., str]) -> None:
    assert make_topic("x") != make_topic("x")
