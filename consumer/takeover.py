"""What an instance does when partitions are assigned to it, before it stores anything
from them (ARCHITECTURE invariant 7): the I/O around consumer.handoff.

For each assigned partition: read the group's committed offset and its mark; refuse to
run if the mark (or an ack on the reply topic) shows that this WAL lost acknowledged
events; read the acks published since the mark's ack; remember the offsets another WAL
acked first (the batch core acks them again with that home).

Then the orphan sweep, for every partition this WAL holds events of past its *own* last
commit (a crash between fsync and commit, or a zombie): read the acks published since
that commit's mark (kept in ``COMMITTED.json`` in the WAL directory, a hint: a stale one
only makes the read longer, a missing one makes it start at the reply partition's
beginning), and void this WAL's copies of offsets another WAL acked first. The sweep
runs at every assignment, so orphans left by a crash are voided when the instance comes
back; one stored while another instance had not yet acked the offset is voided at the
first assignment after that ack.

Cost: one committed-offset fetch per partition held or assigned, and reading the reply
topic from the relevant marks to its end (normally a few batches; after a long outage,
what was acked meanwhile on that reply partition). Acks still on their way from a dead
instance when the reply topic is read are not seen; static membership keeps a partition
from moving before the old member's session expires, which bounds that window.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from consumer.acks import Stored
from consumer.adapter import KafkaAdapter, Partition
from consumer.commits import Commits
from consumer.errors import WalTailLost
from consumer.handoff import CommitMark, decode_mark, first_homes, lost_tail
from walcore import Wal
from walcore.files import FILE_MODE

log = logging.getLogger(__name__)

LOCAL_MARKS = "COMMITTED.json"


class Takeover:
    def __init__(self, client: KafkaAdapter, wal: Wal, reply_topic: str,
                 on_voided: Callable[[Sequence[int]], None] = lambda _seqs: None) -> None:
        """``on_voided(seqs)``: called with the seqs this WAL just voided (the store removes them)."""
        self._on_voided = on_voided
        self._client = client
        self._wal = wal
        self._reply_topic = reply_topic
        # (topic, partition) -> offset -> home to repeat: another WAL's, or this one's for an
        # offset it does not hold (an acked duplicate)
        self.homes: dict[Partition, dict[int, Stored]] = {}
        self._local = _load(wal.directory / LOCAL_MARKS)  # this WAL's last confirmed commits
        # (topic, partition) -> every WAL that committed it (its commit mark's list): this
        # WAL's commits carry it on, so the group's marks name every store of its events.
        self.history: dict[Partition, frozenset[str]] = {}

    def committed(self, commits: Commits) -> None:
        """The broker confirmed these commits of ours: remember them (a hint, not fsynced)."""
        self._local.update(commits)
        path = self._wal.directory / LOCAL_MARKS
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)  # owner-only, as the WAL's files
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({f"{t}\x00{p}": list(c) for (t, p), c in self._local.items()}))
        os.replace(tmp, path)

    def revoked(self, partitions: Sequence[Partition]) -> None:
        for partition in partitions:
            self.homes.pop(partition, None)

    def assigned(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """Raises WalTailLost when this WAL lost acknowledged events. Returns what the WAL
        holds: {partition: highest stored offset}."""
        held = self._wal.source_offsets()
        group = self._client.committed(sorted({*partitions, *held}))
        marks = {partition: decode_mark(commit[1]) if commit else None for partition, commit in group.items()}
        lost = [(tail, partition) for partition, mark in marks.items()
                if (tail := lost_tail(mark, self._wal.wal_id, self._wal.last_seq)) is not None]
        if lost:  # the whole lost range: the highest seq any commit of this WAL names
            (first, _), partition = max(lost, key=lambda item: item[0][1])
            _refuse_if_lost((first, max(tail[1] for tail, _ in lost)), partition, "its offset commits")
        wal_id = self._wal.wal_id
        for partition in partitions:
            mark = marks.get(partition)
            self.history[partition] = mark.wals if mark is not None else frozenset()
            commit = group.get(partition)
            homes = self._read_homes(partition, mark, commit[0] if commit else 0)
            # Repeat every home this WAL cannot answer for by itself: another WAL's, and its
            # own for offsets it does not hold at that position (a producer retry acked as a
            # duplicate: stored nowhere, and the dedup window may have forgotten it since).
            held_here = self._wal.stored_at(*partition, sorted(o for o, h in homes.items() if h.wal_id == wal_id))
            repeat = {offset: home for offset, home in homes.items()
                      if home.wal_id != wal_id or offset not in held_here}
            if repeat:
                self.homes[partition] = repeat
        for partition, last_held in held.items():
            own = self._local.get(partition)
            since = own[0] if own else 0
            if last_held >= since:  # stored past this WAL's own last commit: maybe orphans
                homes = self._read_homes(partition, decode_mark(own[1]) if own else None, since)
                self._void_copies(partition, {o: h for o, h in homes.items() if h.wal_id != wal_id})
        return held

    def _read_homes(self, partition: Partition, mark: CommitMark | None, from_offset: int) -> dict[int, Stored]:
        """The first home of each of the partition's offsets from ``from_offset``, read from
        the reply topic after ``mark``'s ack. Raises WalTailLost when an ack names this WAL
        with a seq it does not hold."""
        topic, number = partition
        where = self._where_acks_start(partition, mark)
        if where is None:
            return {}
        homes = first_homes(self._client.read_from(self._reply_topic, *where), topic, number, from_offset)
        wal_id, last_seq = self._wal.wal_id, self._wal.last_seq
        own = max((home.seq for home in homes.values() if home.wal_id == wal_id), default=0)
        _refuse_if_lost((last_seq + 1, own) if own > last_seq else None, partition, f"its acks on {self._reply_topic}")
        return homes

    def _where_acks_start(self, partition: Partition, mark: CommitMark | None) -> tuple[int, int] | None:
        if mark is not None:
            return mark.ack_partition, mark.ack_offset + 1
        reply_partition = self._client.reply_partition(self._reply_topic, f"{partition[0]}:{partition[1]}".encode())
        # No mark (never committed, or committed before marks): from the reply partition's start.
        return None if reply_partition is None else (reply_partition, 0)

    def _void_copies(self, partition: Partition, foreign: dict[int, Stored]) -> None:
        if not foreign:
            return
        topic, number = partition
        copies = self._wal.stored_at(topic, number, sorted(foreign))
        if not copies:
            return
        first = min(copies)
        home = foreign[first]
        voided = self._wal.void(sorted(copies.values()), f"{topic}:{number} offsets acked first by WAL "
                                f"{home.wal_id} (offset {first} as seq {home.seq})")
        if voided:
            self._on_voided(voided)
            log.warning("%s:%d: %d event(s) this WAL stored were acked first by another WAL (offset %d: %s seq %d); "
                        "voided here: %s", topic, number, len(voided), first, home.wal_id, home.seq,
                        _ranges(voided), extra={"topic": topic, "partition": number, "offset": first,
                                                "seq": home.seq, "wal_id": home.wal_id})


def _load(path: Path) -> dict[Partition, tuple[int, str]]:
    with contextlib.suppress(FileNotFoundError, ValueError, TypeError, AttributeError):
        found = json.loads(path.read_text())
        return {(key.split("\x00")[0], int(key.split("\x00")[1])): (int(value[0]), str(value[1]))
                for key, value in found.items()}
    return {}


def _refuse_if_lost(lost: tuple[int, int] | None, partition: Partition, witness: str) -> None:
    if lost is not None:
        raise WalTailLost(f"this WAL lost acknowledged events: seqs {lost[0]}..{lost[1]} are acknowledged "
                          f"({witness}, {partition[0]}:{partition[1]}) but the WAL ends at seq {lost[0] - 1}; refusing "
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
