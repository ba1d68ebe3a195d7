"""Handing a partition over between instances of the group (ARCHITECTURE invariant 7):
what an offset commit says about the WAL that made it, and what the reply topic says
about offsets acked but not yet committed. Pure: values in, values out.

Each offset commit carries a *mark* as its metadata: the committing WAL's id, the seq of
the partition's last event that WAL stored, where in the reply topic the ack of the
committed batch is, and every WAL that has committed the partition before (the group's
queries are whole only when all of those stores answer: consumer.serving). A new owner of
the partition reads it before storing anything:

* the mark's WAL is its own and names a seq above its last one: the WAL lost acknowledged
  events (a deleted last segment, a restored old copy): ``lost_tail`` says which;
* acks published after the mark's ack position, for offsets at or after the committed
  offset, are the first homes of those offsets (``first_homes``): a redelivered offset
  already acked by any WAL is acked again with that same (wal_id, seq), never stored anew.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from consumer.acks import Ack, NotAnAck, Stored, parse_ack

MARK_VERSION = 1
# WALs one mark lists at most (16-character ids: ~2 KB of the broker's 4,096-byte metadata
# limit). A partition committed from by more WALs lists MORE_WALS among them, a name no
# store answers for, so that no group answer can call itself complete.
MAX_MARK_WALS = 100
MORE_WALS = "(more WALs than a commit mark lists)"


class CommitMark(NamedTuple):
    wal_id: str
    last_seq: int  # the seq of the partition's last event this WAL stored (0: none yet)
    ack_partition: int  # the reply-topic partition and offset of the committed batch's ack
    ack_offset: int
    wals: frozenset[str] = frozenset()  # every WAL that committed the partition (this one too)


def encode_mark(mark: CommitMark) -> str:
    """The offset commit's metadata (brokers keep up to 4096 bytes by default)."""
    wals = sorted(mark.wals | {mark.wal_id})
    if len(wals) > MAX_MARK_WALS:
        others = [wal for wal in wals if wal not in (MORE_WALS, mark.wal_id)]
        wals = [MORE_WALS, mark.wal_id, *others[:MAX_MARK_WALS - 2]]
    return json.dumps({"v": MARK_VERSION, "wal": mark.wal_id, "seq": mark.last_seq,
                       "ack": [mark.ack_partition, mark.ack_offset], "wals": wals}, separators=(",", ":"))


def decode_mark(metadata: str | None) -> CommitMark | None:
    """The mark in an offset commit's metadata; None when there is none (a commit made by
    something else, or before marks existed) or it is not one of ours."""
    if not metadata:
        return None
    try:
        value = json.loads(metadata)
        wals = value.get("wals", [])  # marks before the WAL history had none
        mark = CommitMark(value["wal"], value["seq"], value["ack"][0], value["ack"][1])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    if (value.get("v") != MARK_VERSION or not isinstance(mark.wal_id, str) or not mark.wal_id
            or not all(type(n) is int and n >= 0 for n in mark[1:4])
            or not isinstance(wals, list) or not all(isinstance(wal, str) and wal for wal in wals)):
        return None
    return mark._replace(wals=frozenset(wals) | {mark.wal_id})


def lost_tail(mark: CommitMark | None, wal_id: str, last_seq: int) -> tuple[int, int] | None:
    """The seqs (first, last) this WAL acknowledged (its own commit says so) but no longer
    holds; None when nothing is missing."""
    if mark is None or mark.wal_id != wal_id or mark.last_seq <= last_seq:
        return None
    return last_seq + 1, mark.last_seq


def first_homes(values: Iterable[bytes | None], topic: str, partition: int, from_offset: int) -> dict[int, Stored]:
    """Read reply-topic messages in their order: the first durable home of each offset of
    ``topic:partition`` at or after ``from_offset``. Rejections are not homes (the new owner
    rejects the record again and sends its dead letter again: the old one may be lost);
    messages that are not acks, or are of other partitions, are skipped."""
    homes: dict[int, Stored] = {}
    for value in values:
        ack = parse_ack(value)
        if isinstance(ack, NotAnAck) or ack.topic != topic or ack.partition != partition:
            continue
        _add_homes(homes, ack, from_offset)
    return homes


def _add_homes(homes: dict[int, Stored], ack: Ack, from_offset: int) -> None:
    for first, last, seq in ack.acked:
        for offset in range(max(first, from_offset), last + 1):
            homes.setdefault(offset, Stored(ack.wal_id, seq + offset - first, False))
    for offset, seq in ack.duplicates:
        if offset >= from_offset:
            homes.setdefault(offset, Stored(ack.wal_id, seq, True))
