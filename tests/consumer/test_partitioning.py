"""Kafka's default partitioner, our own copy (the confluent backend imports no kafka-python),
against kafka-python's and against literal values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from consumer.kafka.partitioning import entity_key_hashes, murmur2, partition_of


@given(st.binary(max_size=64))
def test_murmur2_is_kafka_pythons_for_any_bytes(data: bytes) -> None:
    assert murmur2(data) & 0x7FFFFFFF == kafka_python_murmur2(data) & 0x7FFFFFFF
    assert murmur2(data) == kafka_python_murmur2(data) & 0xFFFFFFFF


def test_ack_keys_map_to_literal_partitions() -> None:
    # Computed once with kafka-python 2.3's DefaultPartitioner over 7 partitions.
    keys = [b"signals:0", b"signals:1", b"signals:2", b"signals:17", b"", b"a", b"ab", b"abc"]
    assert [partition_of(key, 7) for key in keys] == EXPECTED


EXPECTED = [3, 1, 3, 6, 2, 5, 0, 4]


def test_the_confluent_path_imports_without_kafka_python_and_durable_producer_without_the_wal_writer() -> None:
    without_kafka = (
        "import sys; sys.modules['kafka'] = None\n"
        "from consumer.kafka import backends\n"
        "import consumer.kafka.confluent.adapter, consumer.kafka.confluent.transport\n"
        "assert backends.option_problems('confluent', {}, {}, {'linger_ms': 1})\n"
        "assert backends.request_limit('confluent', {}) == 1_000_000\n"
    )
    result = subprocess.run([sys.executable, "-c", without_kafka], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr  # importing kafka-python would have raised ImportError
    producer_only = (
        "import sys, consumer.client, consumer.kafka.transport\n"
        "print(sorted(m for m in sys.modules if m.startswith(('walcore.', 'kafka'))))"
    )
    result = subprocess.run([sys.executable, "-c", producer_only], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['walcore.errors', 'walcore.records', 'walcore.schema']"


@given(
    st.lists(
        st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 9, 10, 99, 1000, 10**19, 2**64 - 1])), max_size=50
    )
)
def test_entity_key_hashes_are_murmur2_of_the_decimal_ids(entities: list[int]) -> None:
    """The applier's vectorized hash, against the one-key murmur2, for ids of every length."""
    found = entity_key_hashes(np.array(entities, np.uint64))
    assert found.tolist() == [murmur2(str(entity).encode()) & 0x7FFFFFFF for entity in entities]
