"""Dead letters: a rejected message goes to the DLQ topic as it came, plus why.

The DLQ message keeps the original key, value and headers, and adds headers
(docs/events.md): ``tidal.reason``, ``tidal.source.topic``, ``tidal.source.partition``,
``tidal.source.offset``, ``tidal.source.timestamp``. Pure: builds the message only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from consumer.batch import PolledRecord

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
    headers = list(message.headers or [])
    headers += [
        (REASON, reason.encode()),
        (SOURCE_TOPIC, message.topic.encode()),
        (SOURCE_PARTITION, str(message.partition).encode()),
        (SOURCE_OFFSET, str(message.offset).encode()),
        (SOURCE_TIMESTAMP, str(message.timestamp).encode()),
    ]
    return DeadLetter(message.key, message.value, headers)
