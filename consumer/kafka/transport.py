"""How DurableProducer (consumer.client) talks to Kafka: one transport per backend
(consumer.kafka.<backend>.transport, chosen by consumer.kafka.backends), the same duties
for each.

* ``send``: produce one event; ``on_sent(topic, partition, offset)`` or ``on_failed(exc)``
  is called once the broker answered, from the library's own thread.
* ``read``: the next values on the reply topic (waiting at most ``timeout_s``), read from
  its end as of the transport's creation: acks of this client's sends come after it.

Why two: kafka-python is pure Python, so its sender and fetcher compete for the
interpreter lock with the caller's own threads, and at thousands of sends a second that
queueing is most of the ack latency; librdkafka (``backend="confluent"``) sends and
fetches on its own native threads (docs/performance.md has both figures). Both use the
murmur2 partitioner, so an entity's events land on the same partition whichever client
a producer runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

REPLY_TOPIC_WAIT_S = 30.0  # a reply topic that does not show up by then does not exist

Sent = Callable[[str, int, int], None]
Failed = Callable[[BaseException], None]


class ProducerTransport(Protocol):
    def send(self, topic: str, key: bytes, value: bytes, on_sent: Sent, on_failed: Failed) -> None: ...

    def read(self, timeout_s: float) -> list[bytes | None]: ...

    def flush(self, timeout: float | None) -> None: ...

    def close(self) -> None:
        """Release the clients (after ``flush``; no ``read`` runs any more)."""


def missing_reply_topic(reply_topic: str, bootstrap: object) -> ValueError:
    return ValueError(f"reply topic {reply_topic!r} does not exist (bootstrap {bootstrap})")
