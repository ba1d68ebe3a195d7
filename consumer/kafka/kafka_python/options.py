"""What the kafka-python backend accepts in [kafka], [kafka.consumer] and [kafka.producer],
checked when the configuration loads: kafka-python's own option names (``linger_ms``),
each under the client that has it, minus the ones the service sets itself.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer

DEFAULT_MAX_REQUEST_SIZE = 1_048_576  # kafka-python's max_request_size default


# Options the service sets itself, per client, and why a user may not: each would break an
# invariant or has its own setting. Refused when the configuration is loaded.
RESERVED_CONSUMER = {
    "bootstrap_servers": "set bootstrap_servers instead",
    "group_id": "set group_id instead",
    "group_instance_id": "set group_instance_id instead",
    "max_poll_records": "set max_poll_records instead",
    "enable_auto_commit": "the service commits offsets itself, only once a batch is durable and acked",
    "auto_offset_reset": "the service starts new groups at the earliest offset, so nothing is skipped",
    "key_deserializer": "the service reads raw bytes",
    "value_deserializer": "the service reads raw bytes",
    "default_offset_commit_callback": "the service handles its commits",
}
RESERVED_PRODUCER = {
    "bootstrap_servers": "set bootstrap_servers instead",
    "acks": "acks and dead letters are sent with acks=all: they must survive a broker failure",
    "key_serializer": "the service sends raw bytes",
    "value_serializer": "the service sends raw bytes",
    "transactional_id": "kafka-python 2.3's transactions do not fence a paused instance (KIP-447): "
    'delivery = "transactional" needs backend = "confluent"',
    "partitioner": "acks are keyed by source partition and must land on the partition the handoff reads "
    "(the default murmur2 partitioner)",
}
# What the service passes unless the configuration says otherwise.
CONSUMER_DEFAULTS: dict[str, Any] = {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 3_000}
PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 1}


def option_problems(common: dict[str, Any], consumer: dict[str, Any], producer: dict[str, Any]) -> list[str]:
    """What is wrong with the [kafka], [kafka.consumer] and [kafka.producer] tables, one
    line per option naming it (empty when nothing is)."""
    problems: list[str] = []
    for table, options, known, reserved in (
        ("kafka.consumer", consumer, KafkaConsumer.DEFAULT_CONFIG, RESERVED_CONSUMER),
        ("kafka.producer", producer, KafkaProducer.DEFAULT_CONFIG, RESERVED_PRODUCER),
    ):
        for name in options:
            if name in reserved:
                problems.append(f"{table}.{name} cannot be set: {reserved[name]}")
            elif name not in known:
                problems.append(f"{table}.{name} is not a kafka-python {table.split('.')[1]} option")
    for name in common:
        if name in RESERVED_CONSUMER or name in RESERVED_PRODUCER:
            problems.append(f"kafka.{name} cannot be set: {RESERVED_CONSUMER.get(name) or RESERVED_PRODUCER[name]}")
        elif name not in KafkaConsumer.DEFAULT_CONFIG or name not in KafkaProducer.DEFAULT_CONFIG:
            only = (
                "consumer"
                if name in KafkaConsumer.DEFAULT_CONFIG
                else "producer"
                if name in KafkaProducer.DEFAULT_CONFIG
                else None
            )
            problems.append(
                f"kafka.{name} is an option of the {only} only: put it under [kafka.{only}]"
                if only
                else f"kafka.{name} is not a kafka-python client option"
            )
    return problems


def request_limit(producer_options: dict[str, Any]) -> int:
    """The largest request the producer sends: every ack and dead letter must fit it."""
    return int(producer_options.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))
