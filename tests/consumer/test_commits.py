"""The commit step against a fake consumer: no broker (consumer.commits imports no Kafka
client). Each test is a way a broken commit step would commit too early, too late, or
never."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from consumer.commits import Committer, InFlight, Offsets
from consumer.errors import CommitRefused, DeliveryFailed, KafkaUnavailable


class Send:
    """A delivery the test settles by hand, or that the fake's flush settles."""

    def __init__(self) -> None:
        self._done = False
        self._error: BaseException | None = None

    def settle(self, error: BaseException | None = None) -> None:
        self._done, self._error = True, error

    def done(self) -> bool:
        return self._done

    def error(self) -> BaseException | None:
        return self._error


class FakeConsumer:
    def __init__(self) -> None:
        self.pending: list[Send] = []  # what flush() settles
        self.committed: Offsets = {}  # what the broker holds
        self.sync_commits: list[Offsets] = []
        self.async_callbacks: list[tuple[Offsets, Callable[[Offsets, BaseException | None], None]]] = []
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

    def commit_async(self, offsets: Offsets, on_done: Callable[[Offsets, BaseException | None], None]) -> None:
        self.async_callbacks.append((offsets, on_done))

    def confirm_async(self, error: BaseException | None = None) -> None:
        """The broker answers the oldest async commit."""
        offsets, on_done = self.async_callbacks.pop(0)
        if error is None:
            self.committed.update(offsets)
        on_done(offsets, error)

    def commit_sync(self, offsets: Offsets) -> None:
        self.sync_commits.append(dict(offsets))
        if self.sync_failures:
            raise self.sync_failures.pop(0)
        self.committed.update(offsets)


def committer(fake: FakeConsumer, max_in_flight: int = 4) -> Committer:
    return Committer(fake, max_in_flight=max_in_flight, retry_for_s=5.0, stop=threading.Event())


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


def test_an_async_commit_lost_is_committed_again_by_the_drain() -> None:
    fake = FakeConsumer()
    step = committer(fake)
    send = fake.send()
    send.settle()
    step.submit(InFlight({P0: 10}, [send]))
    step.poll()
    fake.confirm_async(ConnectionResetError("lost under the commit"))
    assert fake.committed == {}
    step.drain()
    assert fake.committed == {P0: 10}


def test_an_async_commit_confirmed_is_not_committed_again() -> None:
    fake = FakeConsumer()
    step = committer(fake)
    send = fake.send()
    send.settle()
    step.submit(InFlight({P0: 10}, [send]))
    step.poll()
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
