"""The WAL's retention floor as the ownership keeps it (consumer.ingest.ownership): a real WAL on
disk, a scripted Kafka adapter. Events this WAL holds at offsets the group has not
committed stay until a commit passes them: this instance's own, or (for a partition it no
longer has) another owner's, read by refresh_floor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from consumer.ingest.ownership import Ownership
from consumer.protocol.acks import Ack
from consumer.protocol.handoff import NO_ACK, CommitMark, encode_mark
from consumer.protocol.types import Commits, Partition
from walcore import EventRecord, SourcePosition, Wal


class ScriptedGroup:
    """The adapter calls a ownership makes, answered from ``commits``."""

    def __init__(self) -> None:
        self.commits: dict[Partition, tuple[int, str] | None] = {}
        self.registered: list[Commits] = []

    def committed(
        self, partitions: Sequence[Partition], timeout_s: float | None = None
    ) -> dict[Partition, tuple[int, str] | None]:
        return {partition: self.commits.get(partition) for partition in partitions}

    def watermarks(self, partitions: Sequence[Partition]) -> dict[Partition, tuple[int, int]]:
        return {partition: (0, 100) for partition in partitions}

    def reply_partition(self, topic: str, key: bytes) -> int | None:
        return None  # no reply topic to read: no homes

    def commit_sync(self, commits: Commits) -> None:
        self.registered.append(commits)


def test_the_floor_holds_uncommitted_events_until_a_commit_passes_them(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "wal") as wal:
        wal.append_batch([EventRecord(n, 1, 1.0, n, source=SourcePosition("t", 0, n)) for n in range(10)])  # 1..10
        wal.append_batch(
            [EventRecord(n, 1, 1.0, 100 + n, source=SourcePosition("t", 1, n)) for n in range(5)]
        )  # 11..15
        group = ScriptedGroup()
        group.commits[("t", 0)] = (5, "")
        ownership = Ownership(group, wal, "acks")  # type: ignore[arg-type]  # a scripted adapter: only these calls
        assert ownership.floor == 0  # before the first assignment: keep everything
        ownership.assigned([("t", 0)])  # t:1 is held but now another instance's
        assert ownership.floor == 6  # t:0 offset 5 (seq 6) is the first event not committed
        assert group.registered and ("t", 0) in group.registered[0]
        ownership.committed({("t", 0): (10, "mark")})  # our own commit passes t:0's last event
        assert ownership.floor == 11  # t:1's events, never committed by anyone
        ownership.refresh_floor()
        assert ownership.floor == 11
        group.commits[("t", 1)] = (4, "")  # the new owner committed, but not past offset 4
        ownership.refresh_floor()
        assert ownership.floor == 11
        group.commits[("t", 1)] = (5, "")
        ownership.refresh_floor()
        assert ownership.floor is None  # nothing uncommitted: retention is bounded by the store alone


class ReadCountingGroup(ScriptedGroup):
    """Every source partition's acks land on reply partition 0, which holds ``acks``."""

    def __init__(self, acks: list[bytes]) -> None:
        super().__init__()
        self.acks = acks
        self.reads: list[tuple[str, int, int]] = []

    def reply_partition(self, topic: str, key: bytes) -> int | None:
        return 0

    def read_from(self, topic: str, partition: int, offset: int) -> list[bytes | None]:
        self.reads.append((topic, partition, offset))
        return list(self.acks[offset:])


def test_an_assignment_reads_each_place_of_the_reply_topic_once_for_all_its_partitions(tmp_path: Path) -> None:
    """Four partitions whose marks name WAL w2 and no ack yet: each handoff starts at reply
    partition 0's first message; one read serves the four, and each gets w2's homes."""
    acks = [Ack("w2", "t", n, [(0, 9, 100 * n + 1)], [], []).encode() for n in range(4)]
    group = ReadCountingGroup(acks)
    for n in range(4):
        group.commits[("t", n)] = (0, encode_mark(CommitMark("w2", 0, 0, NO_ACK, frozenset({"w2"}))))
    with Wal.open(tmp_path / "wal") as wal:
        ownership = Ownership(group, wal, "acks")  # type: ignore[arg-type]  # a scripted adapter: only these calls
        ownership.assigned([("t", n) for n in range(4)])
        assert group.reads == [("acks", 0, 0)]
        for n in range(4):
            (run,) = ownership.homes[("t", n)]
            assert (run.wal_id, run.first, run.last, run.seq) == ("w2", 0, 9, 100 * n + 1)
        ownership.assigned([("t", 0)])  # a later assignment reads the reply topic anew
        assert group.reads == [("acks", 0, 0), ("acks", 0, 0)]
