"""A commit mark written through one Kafka backend's adapter reads back whole through the
other's: a group may mix backends (docs/operations.md), and the handoff believes only acks
of the WALs a mark names. Real broker, both adapters, no service."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumer.kafka.adapter import Connection
from consumer.kafka.confluent.adapter import ConfluentAdapter
from consumer.kafka.kafka_python.adapter import KafkaPythonAdapter
from consumer.protocol.handoff import NO_ACK, CommitMark, decode_mark, encode_mark

pytestmark = [pytest.mark.kafka, pytest.mark.backends("kafka-python")]  # the test uses both adapters itself

MARKS = [
    CommitMark("4783aff20e11407e", 0, 0, NO_ACK, frozenset({"4783aff20e11407e"})),
    CommitMark("9a3c7eaaafdf4ad0", 8921, 2, 411, frozenset({"9a3c7eaaafdf4ad0", "4783aff20e11407e"})),
]


def connection(bootstrap: str, topic: str, client_id: str) -> Connection:
    return Connection(
        bootstrap_servers=bootstrap,
        group_id=f"g-{topic}",
        group_instance_id=None,
        client_id=client_id,
        max_poll_records=10,
        consumer_options={},
        producer_options={},
    )


def test_marks_cross_between_kafka_python_and_librdkafka_whole(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("marks", 1)
    how = connection(kafka_bootstrap, topic, "marks-test")
    adapters = [KafkaPythonAdapter.connect(how), ConfluentAdapter.connect(how)]
    try:
        for offset, mark in enumerate(MARKS * 10):
            writer = adapters[offset % 2]  # alternately: the other one reads what this one wrote
            writer.commit_sync({(topic, 0): (offset, encode_mark(mark))})
            for reader in adapters:
                commit = reader.committed([(topic, 0)], 30)[(topic, 0)]
                assert commit is not None and commit[0] == offset
                assert decode_mark(commit[1]) == mark, (type(writer).__name__, type(reader).__name__, commit[1])
    finally:
        for adapter in adapters:
            adapter.close()


def test_both_backends_put_an_ack_key_where_the_handoff_looks_for_it(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    """Acks are keyed by source partition; a handoff reads the one reply partition the key
    maps to (reply_partition, murmur2 as the Java client). Whichever backend sent the ack,
    and whichever computes the partition, it must be the partition the broker got."""
    topic = make_topic("acks", 7)
    how = connection(kafka_bootstrap, topic, "keys-test")
    adapters = [KafkaPythonAdapter.connect(how), ConfluentAdapter.connect(how)]
    keys = [f"signals:{n}".encode() for n in range(40)] + [b"", b"\xff\x00", "ünï:3".encode()]
    try:
        for sender in adapters:
            deliveries = [(key, sender.send(topic, key, b"{}")) for key in keys]
            sender.flush()
            for key, delivery in deliveries:
                position = delivery.position()
                assert position is not None, key
                expected = [adapter.reply_partition(topic, key) for adapter in adapters]
                assert expected == [position[0], position[0]], (type(sender).__name__, key, position, expected)
        spread = {adapters[0].reply_partition(topic, key) for key in keys}
        assert len(spread) >= 5  # the keys really do land on different partitions
    finally:
        for adapter in adapters:
            adapter.close()
