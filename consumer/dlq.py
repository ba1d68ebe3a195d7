"""Dead letters: a rejected message goes to the DLQ topic as it came, plus why.

The DLQ message keeps the original key, value and headers, and adds headers
(docs/events.md): ``tidal.reason``, ``tidal.source.topic``, ``tidal.source.partition``,
``tidal.source.offset``, ``tidal.source.timestamp``; a producer's own ``tidal.*`` headers
are renamed ``original.tidal.*``. Pure: builds the message only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from consumer.batch import PolledRecord

PREFIX = "tidal."
REASON = "tidal.reason"
SOURCE_TOPIC = "tidal.source.topic"
SOURCE_PARTITION = "tidal.source.partition"
SOURCE_OFFSET = "tidal.source.offset"
SOURCE_TIMESTAMP = "tidal.source.timestamp"


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(message: PolledRecord, reason: str) -> DeadLetter:
    # A producer's own ``tidal.*`` headers are kept, renamed ``original.tidal.*``, so a
    # reader of the DLQ never takes a spoofed reason or source for ours.
    headers = [(f"original.{name}" if name.startswith(PREFIX) else name, value)
               for name, value in message.headers or []]
    headers += [
        (REASON, reason.encode()),
        (SOURCE_TOPIC, message.topic.encode()),
        (SOURCE_PARTITION, str(message.partition).encode()),
        (SOURCE_OFFSET, str(message.offset).encode()),
        (SOURCE_TIMESTAMP, str(message.timestamp).encode()),
    ]
    return DeadLetter(message.key, message.value, headers)
