"""What an instance does when partitions are assigned to it, before it stores anything
from them (ARCHITECTURE invariant 7): the I/O around consumer.protocol.handoff.

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

from consumer.errors import CommitRefused, KafkaUnavailable, RegistrationRefused, WalTailLost
from consumer.kafka.adapter import KafkaAdapter, Partition
from consumer.protocol.acks import Stored
from consumer.protocol.handoff import (
    DISTRUST_KINDS,
    NO_ACK,
    CommitMark,
    Distrusted,
    HomeRun,
    Homes,
    decode_mark,
    encode_mark,
    first_homes,
    lost_tail,
    registration,
)
from consumer.protocol.types import Commits
from walcore import Wal
from walcore.files import FILE_MODE

log = logging.getLogger(__name__)

LOCAL_MARKS = "COMMITTED.json"


class Ownership:
    def __init__(
        self,
        client: KafkaAdapter,
        wal: Wal,
        reply_topic: str,
        on_voided: Callable[[Sequence[int]], None] = lambda _seqs: None,
    ) -> None:
        """``on_voided(seqs)``: called with the seqs this WAL just voided (the store removes them)."""
        self._on_voided = on_voided
        self._client = client
        self._wal = wal
        self._reply_topic = reply_topic
        # (topic, partition) -> the homes to repeat: another WAL's, or this one's for an
        # offset it does not hold (an acked duplicate)
        self.homes: dict[Partition, Homes] = {}
        self._local = _load(wal.directory / LOCAL_MARKS)  # this WAL's last confirmed commits
        # (topic, partition) -> every WAL that committed it (its commit mark's list): this
        # WAL's commits carry it on, so the group's marks name every store of its events.
        self.history: dict[Partition, frozenset[str]] = {}
        # Per partition this WAL holds events of at offsets the group had not committed at the
        # last assignment: (the lowest such seq, the highest offset held). Retention keeps
        # those seqs until a confirmed commit passes the offset (they are consumed again, and
        # only the WAL's copy makes them redeliveries). None until the first assignment.
        self._unsettled: dict[Partition, tuple[int, int]] | None = None

    @property
    def floor(self) -> int | None:
        """The lowest seq the WAL must keep for offsets not committed as of the last
        assignment; 0 before the first one (nothing known: keep everything); None: none."""
        if self._unsettled is None:
            return 0
        return min((seq for seq, _ in self._unsettled.values()), default=None)

    def committed(self, commits: Commits) -> None:
        """The broker confirmed these commits of ours: remember them (a hint, not fsynced)."""
        self._settle({partition: offset for partition, (offset, _) in commits.items()})
        self._local.update(commits)
        path = self._wal.directory / LOCAL_MARKS
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)  # owner-only, as the WAL's files
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({f"{t}\x00{p}": list(c) for (t, p), c in self._local.items()}))
        os.replace(tmp, path)

    def refresh_floor(self) -> None:
        """Read the group's commits of the partitions held back from retention: another
        owner's commits pass the events this WAL holds of partitions it no longer has (its
        own commits settle the others as they come). Never raises: retried at the next call."""
        if not self._unsettled:
            return
        try:
            found = self._client.committed(sorted(self._unsettled), timeout_s=5.0)
        except KafkaUnavailable:
            return
        self._settle({partition: commit[0] for partition, commit in found.items() if commit is not None})

    def _settle(self, offsets: dict[Partition, int]) -> None:
        """Partitions committed past the last offset this WAL holds of them leave the floor."""
        if self._unsettled:
            for partition, offset in offsets.items():
                if partition in self._unsettled and offset > self._unsettled[partition][1]:
                    del self._unsettled[partition]

    def revoked(self, partitions: Sequence[Partition]) -> None:
        for partition in partitions:
            self.homes.pop(partition, None)

    def assigned(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """Raises WalTailLost when this WAL lost acknowledged events, RegistrationRefused
        when the group moved on while this WAL registered. Returns what the WAL holds:
        {partition: highest stored offset}."""
        # The reply topic as read during this assignment, by (reply partition, from offset):
        # several source partitions (and a partition's handoff and its sweep) often start at
        # the same place, and one snapshot of it serves them all.
        read: dict[tuple[int, int], list[bytes | None]] = {}
        held = self._wal.source_offsets()
        involved = sorted({*partitions, *held})
        group = self._client.committed(involved)
        marks = {partition: decode_mark(commit[1]) if commit else None for partition, commit in group.items()}
        lost = [
            (tail, partition)
            for partition, mark in marks.items()
            if (tail := lost_tail(mark, self._wal.wal_id, self._wal.last_seq)) is not None
        ]
        if lost:  # the whole lost range: the highest seq any commit of this WAL names
            (first, _), partition = max(lost, key=lambda item: item[0][1])
            _refuse_if_lost((first, max(tail[1] for tail, _ in lost)), partition, "its offset commits")
        # Where each partition starts and ends now; only the topics being assigned (a held
        # partition of a topic no longer consumed may not exist: its sweep goes unbounded).
        topics = {topic for topic, _ in partitions}
        ends = self._client.watermarks([partition for partition in involved if partition[0] in topics])
        self._register(partitions, marks, group, ends)
        wal_id = self._wal.wal_id
        for partition in partitions:
            mark = marks.get(partition)
            self.history[partition] = mark.wals if mark is not None else frozenset()
            commit = group.get(partition)
            homes = self._read_homes(partition, mark, commit[0] if commit else 0, ends[partition][1], mark, read=read)
            # Repeat every home this WAL cannot answer for by itself: another WAL's, and its
            # own for offsets it does not hold at that position (a producer retry acked as a
            # duplicate: stored nowhere, and the dedup window may have forgotten it since).
            own = [offset for run in homes if run.wal_id == wal_id for offset in range(run.first, run.last + 1)]
            held_here = self._wal.stored_at(*partition, own)
            repeat = Homes()
            for run in homes:
                for first, last in _around(run, held_here) if run.wal_id == wal_id else [(run.first, run.last)]:
                    repeat.add(run._replace(first=first, last=last, seq=run.seq + first - run.first))
            if repeat:
                self.homes[partition] = repeat
        self._unsettled = self._uncommitted(held, group)
        for partition, last_held in held.items():
            own_commit = self._local.get(partition)
            since = own_commit[0] if own_commit else 0
            if last_held >= since:  # stored past this WAL's own last commit: maybe orphans
                end = ends[partition][1] if partition in ends else None
                own_mark = decode_mark(own_commit[1]) if own_commit else None
                homes = self._read_homes(partition, own_mark, since, end, marks.get(partition), read=read)
                self._void_copies(partition, [run for run in homes if run.wal_id != wal_id])
        return held

    def _uncommitted(
        self, held: dict[Partition, int], group: dict[Partition, tuple[int, str] | None]
    ) -> dict[Partition, tuple[int, int]]:
        """Per held partition with events at offsets the group has not committed: the
        lowest such seq and the highest offset held."""
        starts = {partition: commit[0] if (commit := group.get(partition)) else 0 for partition in held}
        lowest = self._wal.lowest_seqs({p: start for p, start in starts.items() if held[p] >= start})
        return {partition: (seq, held[partition]) for partition, seq in lowest.items()}

    def _register(
        self,
        partitions: Sequence[Partition],
        marks: dict[Partition, CommitMark | None],
        group: dict[Partition, tuple[int, str] | None],
        ends: dict[Partition, tuple[int, int]],
    ) -> None:
        """Name this WAL in the marks of the assigned partitions before it stores (and acks)
        anything of them (consumer.protocol.handoff.registration): the commit keeps the group's
        offset (the partition's start when there is none)."""
        commits: Commits = {}
        for partition in partitions:
            mark = registration(marks.get(partition), self._wal.wal_id)
            if mark is not None:
                commit = group.get(partition)
                commits[partition] = (commit[0] if commit else ends[partition][0], encode_mark(mark))
                marks[partition] = mark
        if not commits:
            return
        try:
            self._client.commit_sync(commits)
        except CommitRefused as exc:
            raise RegistrationRefused(
                f"registering WAL {self._wal.wal_id} as a store of "
                f"{', '.join(f'{t}:{p}' for t, p in commits)} was refused ({exc})"
            ) from exc
        log.info(
            "registered this WAL in the commit marks of %s (a WAL's acks are believed only once the group's "
            "commits name it)",
            ", ".join(f"{t}:{p}" for t, p in commits),
        )

    def _read_homes(
        self,
        partition: Partition,
        mark: CommitMark | None,
        from_offset: int,
        end: int | None,
        group_mark: CommitMark | None,
        *,
        read: dict[tuple[int, int], list[bytes | None]],
    ) -> Homes:
        """The first home of each of the partition's offsets from ``from_offset``, read from
        the reply topic after ``mark``'s ack (``read``: this assignment's reads, by place);
        only acks the group's mark and ``end`` make believable
        (consumer.protocol.handoff.first_homes), the others reported here."""
        topic, number = partition
        where = self._where_acks_start(partition, mark)
        if where is None:
            return Homes()
        trusted = group_mark.wals if group_mark is not None else frozenset()
        if where not in read:
            read[where] = self._client.read_from(self._reply_topic, *where)
        reading = first_homes(
            read[where],
            topic,
            number,
            from_offset,
            end=end,
            trusted=trusted,
            own=(self._wal.wal_id, self._wal.last_seq),
        )
        if reading.distrusted:
            _report(partition, self._reply_topic, reading.distrusted)
        return reading.homes

    def _where_acks_start(self, partition: Partition, mark: CommitMark | None) -> tuple[int, int] | None:
        if mark is not None and mark.ack_offset != NO_ACK:
            return mark.ack_partition, mark.ack_offset + 1
        reply_partition = self._client.reply_partition(self._reply_topic, f"{partition[0]}:{partition[1]}".encode())
        # No ack committed yet (no mark, a mark from before marks, a registration): from the
        # reply partition's start.
        return None if reply_partition is None else (reply_partition, 0)

    def _void_copies(self, partition: Partition, foreign: list[HomeRun]) -> None:
        if not foreign:
            return
        topic, number = partition
        copies = self._wal.stored_at(topic, number, [o for run in foreign for o in range(run.first, run.last + 1)])
        if not copies:
            return
        first = min(copies)
        run = next(run for run in foreign if run.first <= first <= run.last)
        home = Stored(run.wal_id, run.seq + first - run.first, run.duplicate)
        voided = self._wal.void(
            sorted(copies.values()),
            f"{topic}:{number} offsets acked first by WAL {home.wal_id} (offset {first} as seq {home.seq})",
        )
        if voided:
            self._on_voided(voided)
            log.warning(
                "%s:%d: %d event(s) this WAL stored were acked first by another WAL (offset %d: %s seq %d); "
                "voided here: %s",
                topic,
                number,
                len(voided),
                first,
                home.wal_id,
                home.seq,
                _ranges(voided),
                extra={"topic": topic, "partition": number, "offset": first, "seq": home.seq, "wal_id": home.wal_id},
            )


def _load(path: Path) -> dict[Partition, tuple[int, str]]:
    with contextlib.suppress(FileNotFoundError, ValueError, TypeError, AttributeError):
        found = json.loads(path.read_text())
        return {
            (key.split("\x00")[0], int(key.split("\x00")[1])): (int(value[0]), str(value[1]))
            for key, value in found.items()
        }
    return {}


def _around(run: HomeRun, held: dict[int, int]) -> list[tuple[int, int]]:
    """The stretches of ``run``'s offsets not in ``held``."""
    stretches: list[tuple[int, int]] = []
    start = run.first
    for offset in sorted(o for o in held if run.first <= o <= run.last):
        if offset > start:
            stretches.append((start, offset - 1))
        start = offset + 1
    if start <= run.last:
        stretches.append((start, run.last))
    return stretches


def _report(partition: Partition, reply_topic: str, distrusted: list[Distrusted]) -> None:
    """One line per kind of distrust; an ack naming this WAL past its end is an error (forged,
    or a tail lost before its commit: the operator must look), the others warnings."""
    topic, number = partition
    for kind in DISTRUST_KINDS:
        found = [item for item in distrusted if item.kind == kind]
        if found:
            own = kind == "own_seq"
            log.log(
                logging.ERROR if own else logging.WARNING,
                "%s:%d: %d ack(s) on %s not believed (first: %s); their offsets are stored and acked as if "
                "never acked (docs/acks.md, what is believed)%s",
                topic,
                number,
                len(found),
                reply_topic,
                found[0].reason,
                "; if this WAL lost its last segments, restore them (docs/operations.md, WAL trouble)" if own else "",
                extra={"topic": topic, "partition": number},
            )


def _refuse_if_lost(lost: tuple[int, int] | None, partition: Partition, witness: str) -> None:
    if lost is not None:
        raise WalTailLost(
            f"this WAL lost acknowledged events: seqs {lost[0]}..{lost[1]} are acknowledged "
            f"({witness}, {partition[0]}:{partition[1]}) but the WAL ends at seq {lost[0] - 1}; refusing "
            "to run so those (wal_id, seq) pairs are never given to other events. Restore the "
            "WAL's missing segments (docs/operations.md, WAL trouble)"
        )


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
