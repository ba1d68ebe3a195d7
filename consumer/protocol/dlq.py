"""Dead letters: a rejected message goes to the DLQ topic as it came, plus why.

The DLQ message keeps the original key, value and headers, and adds headers
(docs/events.md): ``tidal.reason``, ``tidal.source.topic``, ``tidal.source.partition``,
``tidal.source.offset``, ``tidal.source.timestamp``; a producer's own ``tidal.*`` headers
are renamed ``original.tidal.*``; a copy too large to send is truncated, with
``tidal.truncated`` (original size) and ``tidal.original.blake3``. Pure: builds the message only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import blake3

if TYPE_CHECKING:
    from consumer.protocol.types import PolledRecord

PREFIX = "tidal."
REASON = "tidal.reason"
SOURCE_TOPIC = "tidal.source.topic"
SOURCE_PARTITION = "tidal.source.partition"
SOURCE_OFFSET = "tidal.source.offset"
SOURCE_TIMESTAMP = "tidal.source.timestamp"
TRUNCATED = "tidal.truncated"  # the original value's size in bytes, when the copy was cut
ORIGINAL_BLAKE3 = "tidal.original.blake3"  # hex BLAKE3-256 of the whole original value

# The producer refuses requests over max_request_size (1 MiB by default): the largest dead
# letter (key + value + headers) sent whole, with room for the record and request framing
# (the service derives it from the producer's configured limit: consumer.ingest.steps).
MAX_DEAD_LETTER_BYTES = 1_000_000
TRUNCATION_HEADERS_BYTES = 128


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(message: PolledRecord, reason: str, max_bytes: int = MAX_DEAD_LETTER_BYTES) -> DeadLetter:
    """The DLQ copy of ``message``. One whose key and value would not fit ``max_bytes``
    (a value the input topic took but the producer's request cannot carry) is sent
    truncated, with headers saying so: its size, the BLAKE3 of the original value, and
    (as always) where the original is in the input topic."""
    # A producer's own ``tidal.*`` headers are kept, renamed ``original.tidal.*``, so a
    # reader of the DLQ never takes a spoofed reason or source for ours.
    theirs = [(f"original.{name}" if name.startswith(PREFIX) else name, value) for name, value in message.headers or []]
    ours = [
        (REASON, reason.encode()),
        (SOURCE_TOPIC, message.topic.encode()),
        (SOURCE_PARTITION, str(message.partition).encode()),
        (SOURCE_OFFSET, str(message.offset).encode()),
        (SOURCE_TIMESTAMP, str(message.timestamp).encode()),
    ]
    key, value = message.key, message.value
    if _size(key, value, theirs + ours) <= max_bytes:
        return DeadLetter(key, value, theirs + ours)
    # Too large: what identifies the original (its position, size and digest) always fits;
    # the producer's own headers, then its key, go if even they are too large; the value is cut.
    if _size(key, b"", theirs + ours) + TRUNCATION_HEADERS_BYTES > max_bytes:
        theirs = []
    if _size(key, b"", ours) + TRUNCATION_HEADERS_BYTES > max_bytes:
        key = None
    original = value or b""
    headers = [
        *theirs,
        *ours,
        (TRUNCATED, str(len(original)).encode()),
        (ORIGINAL_BLAKE3, blake3.blake3(original).hexdigest().encode()),
    ]
    return DeadLetter(key, original[: max(0, max_bytes - _size(key, b"", headers))], headers)


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(name) + len(data) for name, data in headers)
