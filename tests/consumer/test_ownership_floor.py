"""The WAL's retention floor as the ownership keeps it (consumer.ingest.ownership): a real WAL on
disk, a scripted Kafka adapter. Events this WAL holds at offsets the group has not
committed stay until a commit passes them: this instance's own, or (for a partition it no
longer has) another owner's, read by refresh_floor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from consumer.ingest.ownership import Ownership
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
