"""The service's read view (consumer.serving.reader) while the applier writes: every answer
reads one state of the store."""

from __future__ import annotations

import threading
from pathlib import Path

from consumer.config import Settings
from consumer.serving.reader import StoreReader
from walcore.records import EventRecord
from walcore.storage.rocks import RocksEngine
from walcore.storage.signals import NANOS
from walcore.storage.store import SignalStore

SCHEMA = Settings().signal_schema()
LEADER = 1
BATCHES = 100
OTHERS = 40  # new entities a batch, each below the leader


def test_a_top_k_answer_reads_one_state_of_the_store_while_the_view_moves(tmp_path: Path) -> None:
    """A top-k walks the index's runs, then reads its candidates' scores. The leader's score
    changes in every batch (its entry moves to a newer run): an answer whose scores came from
    a later catch-up than its runs would find the leader's entry stale and its new one
    missing, and name another entity first. Catch-ups run back to back while the applier
    writes and queries ask; the leader must head every answer."""
    directory = tmp_path / "store"
    writer = SignalStore(RocksEngine(directory), SCHEMA)
    writer.follow("w", BATCHES * (OTHERS + 1))
    base = 1_000 * NANOS
    seq = 0

    def batch(n: int) -> list[tuple[int, EventRecord]]:
        nonlocal seq
        events = [EventRecord(LEADER, 1, 1.0, base + n)]
        events += [EventRecord(1_000 + n * OTHERS + i, 1, 0.5, base + n) for i in range(OTHERS)]
        first, seq = seq + 1, seq + len(events)
        return list(enumerate(events, first))

    writer.apply(batch(0), seq)
    reader = StoreReader(directory, SCHEMA, "w", lambda: seq, lambda: [])
    done = threading.Event()
    answered = threading.Condition()
    answers = 0
    failures: list[BaseException] = []

    def follow() -> None:
        """Catch-ups every millisecond: far more often than the follower's, to meet answers
        mid-walk."""
        try:
            while not done.wait(0.001):
                reader._catch_up()
        # Anything, reported by the test's thread.
        except Exception as error:  # noqa: BLE001
            failures.append(error)
            done.set()

    def write() -> None:
        """A batch, then wait for an answer to begin after it: answers meet every batch."""
        for n in range(1, BATCHES):
            with answered:
                if not answered.wait_for(lambda n=n: done.is_set() or answers >= n, timeout=10):
                    failures.append(TimeoutError(f"no answer after batch {n}"))
                if done.is_set():
                    return
            writer.apply(batch(n), seq)
        done.set()

    threads = [threading.Thread(target=follow), threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    at = base + 10**6 * NANOS
    try:
        while not done.is_set():
            with reader.using():
                reader.fresh([], 0)
                top = reader.top("view", at, 3, None)["entities"]
            assert top and top[0][0] == LEADER, f"answer {answers}: {top}"
            with answered:
                answers += 1
                answered.notify_all()
    finally:
        with answered:
            done.set()
            answered.notify_all()
        for thread in threads:
            thread.join()
        reader.close()
        writer.close()
    assert not failures, failures
    assert answers >= BATCHES - 1
