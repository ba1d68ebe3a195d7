"""The ack protocol (docs/acks.md): one message per source partition per WAL batch.

Key ``"<topic>:<partition>"``; value (JSON)::

    {"v": 1, "wal_id": "...", "topic": "...", "partition": p,
     "acked": [[first_offset, last_offset, first_seq], ...],
     "duplicates": [[offset, original_seq], ...],
     "rejected": [[offset, "reason"], ...]}

Every consumed offset of the batch is in exactly one list (a rejected record is not in
the WAL, so the three lists partition the offsets). An ``acked`` run maps consecutive
offsets to consecutive seqs; a Kafka redelivery is acked again there with its original
seq. ``duplicates`` are producer retries (same event_id or content).

Pure: outcomes in, ``Ack`` out, bytes out (``Ack.encode``); bytes in, ``Ack`` or
``NotAnAck`` out (``parse_ack``: a malformed or foreign message is a value, never an
exception, so one bad message on the reply topic cannot stop a reader).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from walcore.records import AppendResult

ACK_VERSION = 1


class Stored(NamedTuple):
    """The offset's event is durable as (wal_id, seq); ``duplicate``: a producer retry of
    an event stored earlier, ``seq`` being the original's."""

    wal_id: str
    seq: int
    duplicate: bool


class Rejection(NamedTuple):
    """The offset's message went to the DLQ."""

    reason: str


Outcome = Stored | Rejection


class NotAnAck(NamedTuple):
    """A message on the reply topic that is not a well-formed ack: why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    wal_id: str
    topic: str
    partition: int
    acked: Sequence[tuple[int, int, int]]  # (first_offset, last_offset, first_seq)
    duplicates: Sequence[tuple[int, int]]  # (offset, original_seq)
    rejected: Sequence[tuple[int, str]]  # (offset, reason)

    @property
    def key(self) -> bytes:
        return f"{self.topic}:{self.partition}".encode()

    def encode(self) -> bytes:
        value = {
            "v": ACK_VERSION,
            "wal_id": self.wal_id,
            "topic": self.topic,
            "partition": self.partition,
            "acked": self.acked,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }
        return json.dumps(value, separators=(",", ":")).encode()

    def offsets(self) -> Iterator[int]:
        """Every offset this ack answers for (at most MAX_ACK_OFFSETS, parse_ack checks)."""
        for first, last in self.spans():
            yield from range(first, last + 1)

    def spans(self) -> Iterator[tuple[int, int]]:
        """(first, last) of each run of offsets this ack answers for: a reader that needs
        only where an ack lies never walks its offsets one by one."""
        for first, last, _ in self.acked:
            yield first, last
        for offset, _ in self.duplicates:
            yield offset, offset
        for offset, _ in self.rejected:
            yield offset, offset

    @property
    def size(self) -> int:
        """How many offsets this ack answers for."""
        return sum(last - first + 1 for first, last in self.spans())

    def outcome(self, offset: int) -> Outcome | None:
        """What became of ``offset``; None when this ack does not cover it."""
        for first, last, seq in self.acked:
            if first <= offset <= last:
                return Stored(self.wal_id, seq + offset - first, False)
        for dup_offset, seq in self.duplicates:
            if dup_offset == offset:
                return Stored(self.wal_id, seq, True)
        for rej_offset, reason in self.rejected:
            if rej_offset == offset:
                return Rejection(reason)
        return None


# Half the producer's default max_request_size (1 MiB): an ack message stays well inside it.
MAX_ACK_BYTES = 512 * 1024
# The most offsets one ack message can answer for: one poll's share of one partition, and a
# poll holds at most max_poll_records (consumer.config caps it at this). A message claiming
# more was not made by this service (docs/acks.md, what is believed): parse_ack refuses it
# before anything expands its runs.
MAX_ACK_OFFSETS = 100_000


def fit(ack: Ack, max_bytes: int = MAX_ACK_BYTES) -> Iterator[tuple[Ack, bytes]]:
    """``ack`` encoded, split by offset into several acks whose encodings each fit
    ``max_bytes`` when it is too large (5,000 rejects with long reasons). Each offset is in
    exactly one of the parts, which keep offset order."""
    value = ack.encode()
    offsets = sorted(ack.offsets())
    if len(value) <= max_bytes or len(offsets) < 2:  # one offset's entry is bounded (reasons are)
        yield ack, value
        return
    middle = offsets[len(offsets) // 2]
    yield from fit(_between(ack, 0, middle), max_bytes)
    yield from fit(_between(ack, middle, None), max_bytes)


def _between(ack: Ack, low: int, high: int | None) -> Ack:
    """The part of ``ack`` for offsets ``low <= offset < high``."""
    top = high - 1 if high is not None else None
    acked = [
        (max(first, low), last if top is None else min(last, top), seq + max(first, low) - first)
        for first, last, seq in ack.acked
        if last >= low and (top is None or first <= top)
    ]

    def inside(offset: int) -> bool:
        return low <= offset and (high is None or offset < high)

    return Ack(
        ack.wal_id,
        ack.topic,
        ack.partition,
        acked,
        [d for d in ack.duplicates if inside(d[0])],
        [r for r in ack.rejected if inside(r[0])],
    )


def build_ack(
    wal_id: str,
    topic: str,
    partition: int,
    offsets: Sequence[int],
    results: Sequence[AppendResult],
    *,
    rejected: Sequence[tuple[int, str]],
) -> Ack:
    """The ack of one partition's share of a batch.

    ``offsets[i]`` was stored (or recognised) as ``results[i]``; ``rejected`` lists
    (offset, reason) of what went to the DLQ. Offsets ascend, as Kafka delivers them.
    """
    acked: list[list[int]] = []
    duplicates: list[list[int]] = []
    count = len(results)
    if (
        count
        and offsets[-1] - offsets[0] == count - 1
        and [r[0] for r in results] == list(range(results[0][0], results[0][0] + count))
        and not any(r[1] and not r[2] for r in results)
    ):
        # The common case in O(1) lists: consecutive offsets stored as consecutive seqs.
        acked.append([offsets[0], offsets[-1], results[0][0]])
    else:
        for offset, (seq, duplicate, redelivery) in zip(offsets, results):
            if duplicate and not redelivery:
                duplicates.append([offset, seq])
                continue
            last = acked[-1] if acked else None
            if last is not None and offset == last[1] + 1 and seq == last[2] + offset - last[0]:
                last[1] = offset
            else:
                acked.append([offset, offset, seq])
    return Ack(
        wal_id,
        topic,
        partition,
        [(first, last, seq) for first, last, seq in acked],
        [(offset, seq) for offset, seq in duplicates],
        [(offset, reason) for offset, reason in rejected],
    )


_Offset = Annotated[int, Field(ge=0)]
_Seq = Annotated[int, Field(ge=1)]


class _AckMessage(BaseModel):
    """The shape an ack must have; anything else on the reply topic is NotAnAck."""

    model_config = ConfigDict(strict=True, extra="ignore")

    v: Literal[1]
    wal_id: Annotated[str, Field(min_length=1)]
    topic: Annotated[str, Field(min_length=1)]
    partition: Annotated[int, Field(ge=0)]
    acked: list[tuple[_Offset, _Offset, _Seq]]
    duplicates: list[tuple[_Offset, _Seq]]
    rejected: list[tuple[_Offset, str]]


_validate_ack = _AckMessage.__pydantic_validator__.validate_json


def parse_ack(value: bytes | None) -> Ack | NotAnAck:
    """Decode and shape-check a reply-topic message. Never raises."""
    if value is None:
        return NotAnAck("empty value")
    try:
        message = _validate_ack(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "value"
        return NotAnAck(f"{where}: {first['msg']}")
    if any(first > last for first, last, _ in message.acked):
        return NotAnAck("acked: a run's first offset is after its last")
    ack = Ack(message.wal_id, message.topic, message.partition, message.acked, message.duplicates, message.rejected)
    if ack.size > MAX_ACK_OFFSETS:
        return NotAnAck(f"answers for {ack.size} offsets, more than one batch holds ({MAX_ACK_OFFSETS:,})")
    return ack
