"""What an instance does when partitions are assigned to it, before it stores anything
from them (ARCHITECTURE invariant 7): the I/O around consumer.handoff.

For each assigned partition: read the committed offset and its mark; refuse to run if
the mark (or an ack on the reply topic) shows that this WAL lost acknowledged events;
read the acks published since the mark's ack; remember the offsets another WAL acked
first (the batch core acks them again with that home), and void this WAL's own copies
of them. Partitions this WAL holds uncommitted events of but was not given are swept
the same way (void only), so a crashed instance's orphans are voided when it comes back.

Cost: one committed-offset fetch per partition, and reading the reply topic from the
last committed ack to its end for the partitions that have anything past their commit
(normally a few batches; after a long outage, what was acked meanwhile on that reply
partition). Acks still on their way from a dead instance when the reply topic is read
are not seen; static membership keeps a partition from moving before the old member's
session expires, which bounds that window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from consumer.acks import Stored
from consumer.adapter import KafkaAdapter, Partition
from consumer.errors import WalTailLost
from consumer.handoff import CommitMark, decode_mark, first_homes, lost_tail
from walcore import Wal

log = logging.getLogger(__name__)


class Takeover:
    def __init__(self, client: KafkaAdapter, wal: Wal, reply_topic: str) -> None:
        self._client = client
        self._wal = wal
        self._reply_topic = reply_topic
        # (topic, partition) -> offset -> home, for offsets another WAL acked first
        self.homes: dict[Partition, dict[int, Stored]] = {}

    def revoked(self, partitions: Sequence[Partition]) -> None:
        for partition in partitions:
            self.homes.pop(partition, None)

    def assigned(self, partitions: Sequence[Partition]) -> None:
        """Raises WalTailLost when this WAL lost acknowledged events."""
        held = self._wal.source_offsets()
        given = set(partitions)
        sweep = [partition for partition in held if partition not in given]
        commits = self._client.committed([*partitions, *sweep])
        for partition in partitions:
            homes = self._homes(partition, commits.get(partition))
            if homes:
                self.homes[partition] = homes
        for partition in sweep:
            commit = commits.get(partition)
            if held[partition] >= (commit[0] if commit else 0):  # events stored past the commit
                self._homes(partition, commit)

    def _homes(self, partition: Partition, commit: tuple[int, str] | None) -> dict[int, Stored]:
        """The foreign homes of the partition's offsets past its commit; voids this WAL's
        copies of them."""
        topic, number = partition
        wal_id, last_seq = self._wal.wal_id, self._wal.last_seq
        mark = decode_mark(commit[1]) if commit else None
        _refuse_if_lost(lost_tail(mark, wal_id, last_seq), topic, number, "its offset commit")
        where = self._where_acks_start(partition, mark)
        if where is None:
            return {}
        values = self._client.read_from(self._reply_topic, *where)
        homes = first_homes(values, topic, number, commit[0] if commit else 0)
        own = max((home.seq for home in homes.values() if home.wal_id == wal_id), default=0)
        _refuse_if_lost((last_seq + 1, own) if own > last_seq else None, topic, number,
                        f"its acks on {self._reply_topic}")
        foreign = {offset: home for offset, home in homes.items() if home.wal_id != wal_id}
        if foreign:
            self._void_copies(topic, number, foreign)
        return foreign

    def _where_acks_start(self, partition: Partition, mark: CommitMark | None) -> tuple[int, int] | None:
        if mark is not None:
            return mark.ack_partition, mark.ack_offset + 1
        reply_partition = self._client.reply_partition(self._reply_topic, f"{partition[0]}:{partition[1]}".encode())
        # No mark (never committed, or committed before marks): from the reply partition's start.
        return None if reply_partition is None else (reply_partition, 0)

    def _void_copies(self, topic: str, partition: int, foreign: dict[int, Stored]) -> None:
        copies = self._wal.stored_at(topic, partition, sorted(foreign))
        if not copies:
            return
        first = min(copies)
        home = foreign[first]
        voided = self._wal.void(sorted(copies.values()),
                                f"{topic}:{partition} offsets acked first by WAL {home.wal_id} "
                                f"(offset {first} as seq {home.seq})")
        log.warning("%s:%d: %d event(s) this WAL stored were acked first by another WAL (offset %d: %s seq %d); "
                    "voided here: %s", topic, partition, len(voided), first, home.wal_id, home.seq,
                    _ranges(voided))


def _refuse_if_lost(lost: tuple[int, int] | None, topic: str, partition: int, witness: str) -> None:
    if lost is not None:
        raise WalTailLost(f"this WAL lost acknowledged events: seqs {lost[0]}..{lost[1]} are acknowledged "
                          f"({witness}, {topic}:{partition}) but the WAL ends at seq {lost[0] - 1}; refusing "
                          "to run so those (wal_id, seq) pairs are never given to other events. Restore the "
                          "WAL's missing segments (docs/operations.md, WAL trouble)")


def _ranges(seqs: Sequence[int]) -> str:
    parts: list[str] = []
    start = prev = seqs[0]
    for seq in [*seqs[1:], None]:
        if seq is not None and seq == prev + 1:
            prev = seq
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if seq is not None:
            start = prev = seq
    return ", ".join(parts)
