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

The reply topic is not trusted blindly (docs/acks.md, what is believed): a WAL registers
with a commit (``registration``) before it acks anything of a partition, so an ack is
believed only from a WAL the marks name, only for offsets that existed when the handoff
began, and, naming the reader's own WAL, only for seqs it holds.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from consumer.protocol.acks import Ack, NotAnAck, Stored, parse_ack

MARK_VERSION = 1
# WALs one mark lists at most (16-character ids: ~2 KB of the broker's 4,096-byte metadata
# limit). A partition committed from by more WALs lists MORE_WALS among them, a name no
# store answers for, so that no group answer can call itself complete.
MAX_MARK_WALS = 100
MORE_WALS = "(more WALs than a commit mark lists)"
# A registration's ack position when no ack was committed yet: the handoff reads the reply
# partition from its first retained message, as without a mark.
NO_ACK = -1


class CommitMark(NamedTuple):
    wal_id: str
    last_seq: int  # the seq of the partition's last event this WAL stored (0: none yet)
    ack_partition: int  # the reply-topic partition and offset of the committed batch's ack
    ack_offset: int  # NO_ACK: none yet (read the reply partition from its start)
    wals: frozenset[str] = frozenset()  # every WAL that committed the partition (this one too)


def encode_mark(mark: CommitMark) -> str:
    """The offset commit's metadata (brokers keep up to 4096 bytes by default). On the wire
    it ends with a NUL (confluent-kafka adds it, the kafka-python adapter too); both adapters'
    ``committed`` return it without (consumer.kafka.adapter's contract), as decode_mark reads it."""
    wals = sorted(mark.wals | {mark.wal_id})
    if len(wals) > MAX_MARK_WALS:
        others = [wal for wal in wals if wal not in (MORE_WALS, mark.wal_id)]
        wals = [MORE_WALS, mark.wal_id, *others[: MAX_MARK_WALS - 2]]
    return json.dumps(
        {
            "v": MARK_VERSION,
            "wal": mark.wal_id,
            "seq": mark.last_seq,
            "ack": [mark.ack_partition, mark.ack_offset],
            "wals": wals,
        },
        separators=(",", ":"),
    )


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
    if (
        value.get("v") != MARK_VERSION
        or not isinstance(mark.wal_id, str)
        or not mark.wal_id
        or not all(type(n) is int and n >= 0 for n in mark[1:3])
        or type(mark.ack_offset) is not int
        or mark.ack_offset < NO_ACK
        or not isinstance(wals, list)
        or not all(isinstance(wal, str) and wal for wal in wals)
    ):
        return None
    return mark._replace(wals=frozenset(wals) | {mark.wal_id})


def lost_tail(mark: CommitMark | None, wal_id: str, last_seq: int) -> tuple[int, int] | None:
    """The seqs (first, last) this WAL acknowledged (its own commit says so) but no longer
    holds; None when nothing is missing."""
    if mark is None or mark.wal_id != wal_id or mark.last_seq <= last_seq:
        return None
    return last_seq + 1, mark.last_seq


class HomeRun(NamedTuple):
    """Consecutive offsets ``first..last`` whose first home is ``wal_id`` from ``seq`` on
    (one seq per offset; a duplicate's run is one offset long)."""

    first: int
    last: int
    wal_id: str
    seq: int
    duplicate: bool


class Homes:
    """The first home of each offset of one partition, kept as disjoint runs: a reply
    partition with huge acks costs what its messages do, never one entry per offset."""

    def __init__(self) -> None:
        self._firsts: list[int] = []
        self._runs: list[HomeRun] = []

    def __bool__(self) -> bool:
        return bool(self._runs)

    def __iter__(self) -> Iterator[HomeRun]:
        return iter(self._runs)

    def get(self, offset: int) -> Stored | None:
        index = bisect_right(self._firsts, offset) - 1
        if index < 0 or self._runs[index].last < offset:
            return None
        run = self._runs[index]
        return Stored(run.wal_id, run.seq + offset - run.first, run.duplicate)

    def add(self, run: HomeRun) -> None:
        """Give ``run``'s offsets their home, except those that have one already (the
        first ack of an offset is its home)."""
        cursor, index = run.first, max(bisect_right(self._firsts, run.first) - 1, 0)
        gaps: list[tuple[int, int]] = []
        while cursor <= run.last:
            while index < len(self._runs) and self._runs[index].last < cursor:
                index += 1
            if index == len(self._runs) or self._runs[index].first > run.last:
                gaps.append((cursor, run.last))
                break
            if self._runs[index].first > cursor:
                gaps.append((cursor, self._runs[index].first - 1))
            cursor = self._runs[index].last + 1
        for first, last in gaps:
            at = bisect_right(self._firsts, first)
            self._firsts.insert(at, first)
            self._runs.insert(at, run._replace(first=first, last=last, seq=run.seq + first - run.first))


class Distrusted(NamedTuple):
    """An ack on the reply topic the handoff does not believe, and why."""

    ack: Ack
    reason: str
    kind: str  # one of DISTRUST_KINDS


# Why an ack is not believed: it answers for offsets that did not exist; it names a WAL no
# commit names; it names this WAL with seqs past its end (forged, or a tail lost before its
# commit: the one an operator must look at).
DISTRUST_KINDS = ("past_end", "unknown_wal", "own_seq")


class Reading(NamedTuple):
    homes: Homes
    distrusted: list[Distrusted]


def first_homes(
    values: Iterable[bytes | None],
    topic: str,
    partition: int,
    from_offset: int,
    *,
    end: int | None,
    trusted: frozenset[str],
    own: tuple[str, int],
) -> Reading:
    """Read reply-topic messages in their order: the first durable home of each offset of
    ``topic:partition`` at or after ``from_offset``. Rejections are not homes (the new owner
    rejects the record again and sends its dead letter again: the old one may be lost);
    messages that are not acks, or are of other partitions, are skipped.

    What is believed (docs/acks.md): an ack only for offsets below ``end``, the partition's
    end when the handoff began (no ack can answer for an offset that did not exist; None:
    unknown, a partition of a topic no longer consumed); only
    from a WAL in ``trusted`` (those the group's commit marks name: every WAL registers
    with a commit before it acks); and, when it names this WAL (``own``: wal_id, last seq),
    only for seqs it holds. Anything else is returned as distrusted, never as a home."""
    homes, distrusted = Homes(), []
    own_wal, own_last = own
    believed = trusted | {own_wal}  # this WAL's own acks are checked by seq instead
    for value in values:
        ack = parse_ack(value)
        if isinstance(ack, NotAnAck) or ack.topic != topic or ack.partition != partition:
            continue
        refused = _distrust(ack, end, believed, own_wal, own_last)
        if refused is not None:
            distrusted.append(refused)
            continue
        for first, last, seq in ack.acked:
            if last >= from_offset:
                start = max(first, from_offset)
                homes.add(HomeRun(start, last, ack.wal_id, seq + start - first, False))
        for offset, seq in ack.duplicates:
            if offset >= from_offset:
                homes.add(HomeRun(offset, offset, ack.wal_id, seq, True))
    return Reading(homes, distrusted)


def _distrust(ack: Ack, end: int | None, trusted: frozenset[str], own_wal: str, own_last: int) -> Distrusted | None:
    highest = max((last for _, last in ack.spans()), default=-1)
    if end is not None and highest >= end:
        return Distrusted(
            ack,
            f"answers for offset {highest}, at or past the partition's end ({end}) when the handoff read it",
            "past_end",
        )
    if ack.wal_id not in trusted:
        return Distrusted(ack, f"names WAL {ack.wal_id}, which no commit of this partition names", "unknown_wal")
    if ack.wal_id == own_wal:
        top = max(
            [seq + last - first for first, last, seq in ack.acked] + [seq for _, seq in ack.duplicates], default=0
        )
        if top > own_last:
            return Distrusted(
                ack,
                f"names this WAL's seq {top}, past its last seq {own_last}, and no commit mark confirms it",
                "own_seq",
            )
    return None


def registration(mark: CommitMark | None, wal_id: str) -> CommitMark | None:
    """The mark with which ``wal_id`` registers as a store of a partition before it stores
    (and acks) anything of it, so that every WAL an ack may name is in the group's marks;
    None when ``mark`` names it already. It keeps the previous mark's ack position (a
    handoff reads from the same place) and claims no seq of its own."""
    if mark is not None and wal_id in mark.wals:
        return None
    if mark is None:
        return CommitMark(wal_id, 0, 0, NO_ACK, frozenset({wal_id}))
    return CommitMark(wal_id, 0, mark.ack_partition, mark.ack_offset, mark.wals | {wal_id})
