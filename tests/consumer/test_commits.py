"""The commit step against a fake consumer: no broker (consumer.ingest.commits imports no Kafka
client). Each test is a way a broken commit step would commit too early, too late, or
never."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from consumer.errors import CommitRefused, DeliveryFailed, KafkaUnavailable
from consumer.ingest.commits import Committer, InFlight, PartitionMark
from consumer.protocol.handoff import MAX_MARK_WALS, MORE_WALS, CommitMark, decode_mark
from consumer.protocol.types import Commits, Offsets
from consumer.serving.group import wals_of
from tests.support.fakes import Send


class FakeConsumer:
    def __init__(self) -> None:
        self.pending: list[Send] = []  # what flush() settles
        self.committed: Offsets = {}  # what the broker holds
        self.metadata: dict[tuple[str, int], str] = {}  # and the metadata of each commit
        self.sync_commits: list[Offsets] = []
        self.async_callbacks: list[tuple[Offsets, Callable[[Commits, BaseException | None], None]]] = []
        self._async_commits: list[Commits] = []
        self.sync_failures: list[BaseException] = []  # raised by the next commit_sync calls, in order
        self.flushes = 0

    def send(self) -> Send:
        send = Send()
        self.pending.append(send)
        return send

    def flush(self) -> None:
        self.flushes += 1
        for send in self.pending:
            if not send.done():
                send.settle()

    def commit_async(self, commits: Commits, on_done: Callable[[Commits, BaseException | None], None]) -> None:
        self.async_callbacks.append(({p: offset for p, (offset, _) in commits.items()}, on_done))
        self._async_commits.append(commits)

    def confirm_async(self, error: BaseException | None = None) -> None:
        """The broker answers the oldest async commit."""
        _, on_done = self.async_callbacks.pop(0)
        commits = self._async_commits.pop(0)
        if error is None:
            self._store(commits)
        on_done(commits, error)

    def commit_sync(self, commits: Commits) -> None:
        self.sync_commits.append({p: offset for p, (offset, _) in commits.items()})
        if self.sync_failures:
            raise self.sync_failures.pop(0)
        self._store(commits)

    def _store(self, commits: Commits) -> None:
        self.committed.update({p: offset for p, (offset, _) in commits.items()})
        self.metadata.update({p: metadata for p, (_, metadata) in commits.items()})


def committer(fake: FakeConsumer, max_in_flight: int = 4) -> Committer:
    return Committer(fake, wal_id="w", max_in_flight=max_in_flight, retry_for_s=5.0, stop=threading.Event())


P0, P1 = ("t", 0), ("t", 1)


def test_nothing_is_committed_before_every_delivery_of_the_batch_succeeded() -> None:
    fake = FakeConsumer()
    step = committer(fake)
    ack, letter = fake.send(), fake.send()
    step.submit(InFlight({P0: 10}, [ack, letter]))
    step.poll()
    ack.settle()
    step.poll()
    assert fake.async_callbacks == []  # the dead letter is still on its way
    letter.settle()
    step.poll()
    assert [offsets for offsets, _ in fake.async_callbacks] == [{P0: 10}]


def test_batches_commit_in_order_never_past_an_unsettled_one() -> None:
    fake = FakeConsumer()
    step = committer(fake)
    first, second = fake.send(), fake.send()
    step.submit(InFlight({P0: 10}, [first]))
    step.submit(InFlight({P0: 20, P1: 5}, [second]))
    second.settle()
    step.poll()
    assert fake.async_callbacks == []  # the later batch waits for the earlier one
    first.settle()
    step.poll()
    assert [offsets for offsets, _ in fake.async_callbacks] == [{P0: 20, P1: 5}]  # merged, in one commit


def test_a_failed_ack_delivery_commits_nothing_of_its_batch_or_after() -> None:
    fake = FakeConsumer()
    step = committer(fake)
    ok, failed, later = fake.send(), fake.send(), fake.send()
    step.submit(InFlight({P0: 10}, [ok, failed]))
    step.submit(InFlight({P0: 20}, [later]))
    ok.settle()
    failed.settle(RuntimeError("MessageSizeTooLarge"))
    later.settle()
    with pytest.raises(DeliveryFailed, match=r"1 of 2 .*MessageSizeTooLarge"):
        step.poll()
    with pytest.raises(DeliveryFailed):
        step.drain()
    assert fake.committed == {} and fake.async_callbacks == [] and fake.sync_commits == []


def test_the_drain_flushes_before_it_commits() -> None:
    """A revocation arrives with acks still on their way: the drain must flush them and
    then commit, not give up (or commit without them)."""
    fake = FakeConsumer()
    step = committer(fake)
    step.submit(InFlight({P0: 10}, [fake.send()]))
    step.submit(InFlight({P1: 3}, [fake.send(), fake.send()]))
    assert step.drain() == 2
    assert fake.flushes == 1
    assert fake.sync_commits == [{P0: 10, P1: 3}] and fake.committed == {P0: 10, P1: 3}
    assert step.in_flight == 0


def async_commit_sent(fake: FakeConsumer) -> Committer:
    """A committer that has sent one settled batch's commit asynchronously (unanswered)."""
    step = committer(fake)
    send = fake.send()
    send.settle()
    step.submit(InFlight({P0: 10}, [send]))
    step.poll()
    return step


def test_an_async_commit_lost_is_committed_again_by_the_drain() -> None:
    fake = FakeConsumer()
    step = async_commit_sent(fake)
    fake.confirm_async(ConnectionResetError("lost under the commit"))
    assert fake.committed == {}
    step.drain()
    assert fake.committed == {P0: 10}


def test_an_async_commit_confirmed_is_not_committed_again() -> None:
    fake = FakeConsumer()
    step = async_commit_sent(fake)
    fake.confirm_async()
    step.drain()
    assert fake.sync_commits == []


def test_a_refused_commit_is_dropped_not_retried_and_not_fatal() -> None:
    fake = FakeConsumer()
    fake.sync_failures = [CommitRefused("rebalanced")]
    step = committer(fake)
    step.submit(InFlight({P0: 10}, [fake.send()]))
    step.drain()
    assert fake.sync_commits == [{P0: 10}] and fake.committed == {}
    step.drain()  # nothing left to commit: the refusal was final
    assert len(fake.sync_commits) == 1


def test_a_failing_sync_commit_is_retried_until_it_succeeds() -> None:
    fake = FakeConsumer()
    fake.sync_failures = [KafkaUnavailable("coordinator moving"), KafkaUnavailable("again")]
    step = committer(fake)
    step.submit(InFlight({P0: 10}, [fake.send()]))
    step.drain()
    assert len(fake.sync_commits) == 3 and fake.committed == {P0: 10}


def test_beyond_the_in_flight_bound_poll_drains_back_pressure() -> None:
    fake = FakeConsumer()
    step = committer(fake, max_in_flight=2)
    for offset in (10, 20, 30):
        step.submit(InFlight({P0: offset}, [fake.send()]))
    step.poll()  # 3 > 2 in flight: wait for the acks (flush) and commit synchronously
    assert fake.flushes == 1 and fake.committed == {P0: 30} and step.in_flight == 0


def test_each_commit_carries_the_wal_its_last_seq_and_where_its_ack_is() -> None:
    fake = FakeConsumer()
    step = committer(fake)
    first_ack, second_ack, letter = Send((2, 40)), Send((2, 41)), Send((0, 9))
    step.submit(InFlight({P0: 10, P1: 4}, [first_ack], {P0: PartitionMark(7, first_ack)}))
    step.submit(InFlight({P0: 20}, [second_ack, letter], {P0: PartitionMark(0, second_ack)}))  # all rejected
    for send in (first_ack, second_ack, letter):
        send.settle()
    step.drain()
    assert fake.committed == {P0: 20, P1: 4}
    # the highest seq stays (a batch of rejects stores none); the ack is the latest batch's
    assert decode_mark(fake.metadata[P0]) == CommitMark("w", 7, 2, 41, frozenset({"w"}))
    assert fake.metadata[P1] == ""  # no ack of P1 in the batch: no mark


def test_each_mark_names_every_wal_that_committed_the_partition_before() -> None:
    """The WALs an earlier mark listed (read at the assignment) are carried on, so the marks
    keep naming every store of the partition's events; past MAX_MARK_WALS a name no store
    answers for stands in for the rest (no group answer may then call itself complete)."""
    fake = FakeConsumer()
    many = frozenset(f"{n:016x}" for n in range(MAX_MARK_WALS + 5))
    step = Committer(
        fake,
        wal_id="w",
        max_in_flight=4,
        retry_for_s=5.0,
        stop=threading.Event(),
        history={P0: frozenset({"a", "b"}), P1: many},
    )
    acks = [Send((2, 40)), Send((2, 41))]
    step.submit(InFlight({P0: 10, P1: 3}, acks, {P0: PartitionMark(7, acks[0]), P1: PartitionMark(9, acks[1])}))
    for send in acks:
        send.settle()
    step.drain()
    assert decode_mark(fake.metadata[P0]).wals == {"a", "b", "w"}
    crowded = decode_mark(fake.metadata[P1])
    assert len(crowded.wals) == MAX_MARK_WALS and MORE_WALS in crowded.wals and "w" in crowded.wals
    assert len(fake.metadata[P1]) < 4096  # the broker's default offset.metadata.max.bytes
    assert wals_of({P0: (10, fake.metadata[P0]), P1: None}) == {"a", "b", "w"}
    # a mark written before the WAL history names its own WAL
    assert decode_mark('{"v":1,"wal":"old","seq":3,"ack":[0,5]}').wals == {"old"}
    assert decode_mark('{"v":1,"wal":"x","seq":3,"ack":[0,5],"wals":[7]}') is None


def test_the_before_commit_hook_runs_once_a_batch_is_settled_and_before_its_commit() -> None:
    fake = FakeConsumer()
    seen: list[tuple[int, Offsets]] = []
    step = Committer(
        fake,
        wal_id="w",
        max_in_flight=4,
        retry_for_s=5.0,
        stop=threading.Event(),
        before_commit=lambda n: seen.append((n, dict(fake.committed))),
    )
    send = fake.send()
    step.submit(InFlight({P0: 10}, [send]))
    step.poll()
    assert seen == []  # not settled yet
    send.settle()
    step.poll()
    assert seen == [(1, {})]  # settled, nothing committed yet when the hook ran


def test_the_floor_is_the_first_seq_not_confirmed_committed_and_a_refused_commit_keeps_it() -> None:
    fake = FakeConsumer()
    step = committer(fake)
    first, second = fake.send(), fake.send()
    step.submit(InFlight({P0: 10}, [first], first_seq=1))
    step.submit(InFlight({P0: 20}, [second], first_seq=11))
    step.submit(InFlight({P0: 25}, [fake.send()]))  # every offset a redelivery: no seq of its own
    assert step.floor == 1
    first.settle()
    step.poll()  # sent, not confirmed yet
    assert step.floor == 1
    fake.confirm_async()
    assert step.floor == 11  # the second batch's delivery is still pending
    second.settle()
    fake.sync_failures.append(CommitRefused("the group rebalanced"))
    step.drain()
    assert step.floor == 11  # refused: its events are consumed again, the WAL keeps them
    step.forget_refused()  # the next assignment counts them from the group's commits instead
    assert step.floor is None
