"""What the confluent (librdkafka) backend accepts in [kafka], [kafka.consumer] and
[kafka.producer], checked when the configuration loads (no confluent_kafka import here:
the extra may not be installed, and a config error must still name the field).

librdkafka names its options with dots (``session.timeout.ms``); in TOML they are quoted
keys: ``"session.timeout.ms" = 10000``. librdkafka keeps its own table of them and
refuses an unknown one when the client is created (the service then exits 1 with
librdkafka's message, which names it); this module refuses what the service sets itself
and kafka-python spellings, which would otherwise look like typos.
"""

from __future__ import annotations

from typing import Any

RESERVED_CONSUMER = {
    "bootstrap.servers": "set bootstrap_servers instead",
    "group.id": "set group_id instead",
    "group.instance.id": "set group_instance_id instead",
    "enable.auto.commit": "the service commits offsets itself, only once a batch is durable and acked",
    "enable.auto.offset.store": "the service commits explicit offsets",
    "auto.offset.reset": "the service starts new groups at the earliest offset, so nothing is skipped",
    "enable.partition.eof": "the service does not consume end-of-partition events",
    "partition.assignment.strategy": "the service drains at an eager revocation (range/roundrobin); a "
    "cooperative assignor revokes incrementally",
    "group.protocol": "the service uses the classic group protocol (its drain runs at revocation)",
    "auto.commit.enable": "the service commits offsets itself (this is enable.auto.commit's old topic-level name)",
    "offset.store.method": "offsets are committed to the group coordinator, never to a local file",
    "offset.store.path": "offsets are committed to the group coordinator, never to a local file",
    "offset.store.sync.interval.ms": "offsets are committed to the group coordinator, never to a local file",
    "on_commit": "the service handles its commits",
    "offset_commit_cb": "the service handles its commits",
    "rebalance_cb": "the service's drain and handoff run in its own rebalance callbacks",
    "consume_cb": "the service reads messages itself",
    "error_cb": "the service watches client errors itself",
}
RESERVED_PRODUCER = {
    "bootstrap.servers": "set bootstrap_servers instead",
    "acks": "acks and dead letters are sent with acks=all: they must survive a broker failure",
    "request.required.acks": "acks and dead letters are sent with acks=all: they must survive a broker failure",
    "partitioner": "acks are keyed by source partition and must land where kafka-python puts them "
    "(murmur2), so a group of mixed backends reads one reply partition",
    "partitioner_cb": "acks are keyed by source partition and must land where kafka-python puts them (murmur2)",
    "transactional.id": 'set delivery = "transactional" instead (the id is the WAL\'s)',
    "on_delivery": "the service handles its deliveries",
    "dr_cb": "the service handles its deliveries",
    "dr_msg_cb": "the service handles its deliveries",
    "delivery.report.only.error": "a batch is committed only once every ack is reported delivered: without "
    "those reports no batch could ever be committed (exit 4)",
    "queuing.strategy": "acks of one source partition must reach the reply topic in the order they were sent "
    "(the handoff believes the first ack of an offset)",
    "error_cb": "the service watches client errors itself",
}
# Options neither client may take: each would hide topics or data from the service.
RESERVED_ANY = {
    "default.topic.config": "topic-level options go in the table itself (librdkafka's old nested table could "
    "set auto.offset.reset, acks or the partitioner past these checks)",
    "default_topic_conf": "topic-level options go in the table itself",
    "topic.blacklist": "a hidden input topic is never consumed, a hidden reply topic takes no ack",
}
# Options that may be set only to the value the service needs (librdkafka's default).
REQUIRED_VALUES = {
    "isolation.level": (
        "read_committed",
        "the service reads committed messages only: an aborted transaction's events are not events, and an "
        'aborted ack (delivery = "transactional") is no home',
    ),
}
# librdkafka's in-process mock cluster: the service would consume nothing real and ack to nowhere.
RESERVED_PREFIX = "test.mock."
# What the service passes unless the configuration says otherwise. fetch.queue.backoff.ms:
# librdkafka's 1 s default starves a consumer that empties its queue faster than that.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 3_000,
    "fetch.queue.backoff.ms": 10,
}
PRODUCER_DEFAULTS: dict[str, Any] = {"linger.ms": 1}
# librdkafka's producer refuses a message over message.max.bytes (1,000,000 by default).
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000


def option_problems(common: dict[str, Any], consumer: dict[str, Any], producer: dict[str, Any]) -> list[str]:
    """One line per option the confluent backend refuses, naming it (empty when none is)."""
    problems: list[str] = []
    for table, options, reserved in (
        ("kafka", common, {**RESERVED_CONSUMER, **RESERVED_PRODUCER, **RESERVED_ANY}),
        ("kafka.consumer", consumer, {**RESERVED_CONSUMER, **RESERVED_ANY}),
        ("kafka.producer", producer, {**RESERVED_PRODUCER, **RESERVED_ANY}),
    ):
        for name, value in options.items():
            if name in reserved:
                problems.append(f"{table}.{name} cannot be set: {reserved[name]}")
            elif name in REQUIRED_VALUES and value != REQUIRED_VALUES[name][0]:
                required, reason = REQUIRED_VALUES[name]
                problems.append(f'{table}.{name} can only be "{required}": {reason}')
            elif name.startswith(RESERVED_PREFIX):
                problems.append(
                    f"{table}.{name} cannot be set: it makes librdkafka talk to an in-process mock "
                    "cluster, not the broker"
                )
            elif "_" in name and "." not in name:
                problems.append(
                    f'{table}.{name} is a kafka-python spelling; backend "confluent" takes '
                    f'librdkafka\'s names, e.g. "{name.replace("_", ".")}"'
                )
    return problems


def request_limit(producer_options: dict[str, Any]) -> int:
    """The largest message the producer sends: every ack and dead letter must fit it."""
    return int(producer_options.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
