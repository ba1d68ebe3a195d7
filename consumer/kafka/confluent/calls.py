"""The two librdkafka calls the service's adapter and DurableProducer's transport make the
same way: a produce that waits for room in a full queue, and a consume that waits for the
first message only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import Consumer, Message, Producer

# send() waits this long for room in a full producer queue, then gives up (kafka-python's
# max_block_ms default).
MAX_BLOCK_S = 60.0


def produce_waiting(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    on_delivery: Callable[[Any, Any], None],
    *,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """``producer.produce``, waiting up to MAX_BLOCK_S for room while its queue is full
    (serving delivery reports makes room), as kafka-python's send blocks for max_block_ms;
    BufferError if it stays full. Also DurableProducer's (consumer.kafka.confluent.transport)."""
    deadline = time.monotonic() + MAX_BLOCK_S
    while True:
        try:
            producer.produce(
                topic,
                value,
                key,
                headers=cast("list[tuple[str, str | bytes | None]] | None", headers),
                on_delivery=on_delivery,
            )
            return
        except BufferError:
            if time.monotonic() > deadline:
                raise
            producer.poll(0.1)


def consume_ready(consumer: Consumer, max_records: int, timeout_s: float) -> list[Message]:
    """Up to ``max_records`` messages, waiting at most ``timeout_s`` for the first one only.
    consume(n, timeout) waits until n messages or the timeout: at a moderate rate every
    batch would wait the whole timeout. Takes what is queued at once; when nothing is,
    waits for the first message, then takes what came with it. Also DurableProducer's
    reply reader (consumer.kafka.confluent.transport)."""
    messages = consumer.consume(max_records, 0)
    if not messages:
        first = consumer.poll(timeout_s)
        if first is not None:
            messages = [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
    return messages
