"""The service's read view (consumer.serving.reader) while the applier writes: every answer
reads one state of the store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from consumer.config import Settings
from consumer.protocol import placement
from consumer.serving.reader import StoreReader
from tests.support.walcore_helpers import assert_same_ranking, naive_ranking
from walcore.records import EventRecord
from walcore.storage.rocks import RocksEngine
from walcore.storage.signals import NANOS, lambda_per_ns
from walcore.storage.store import SignalStore

SCHEMA = Settings().signal_schema()
VIEW = SCHEMA.by_name["view"]
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


def test_a_top_list_kept_between_catch_ups_answers_every_time_and_the_next_view_anew(tmp_path: Path) -> None:
    """The reader keeps each top list it walked until the view moves (the rank order does
    not change with t), and the meta it reads for every answer (a type's latest event time,
    the placement record). Asked at three times, each answer must carry that time's decayed
    scores, not the first one's; after a write and a catch-up, the new leader must head it
    (a list kept past the catch-up would not name it), an answer before its event must not
    count it (a latest time kept from the old view would take the index's path, which
    cannot leave it out), the new placement must be answered; and asking many k keeps few
    lists."""
    directory = tmp_path / "store"
    writer = SignalStore(RocksEngine(directory), SCHEMA)
    writer.follow("w", 100)
    events = [EventRecord(entity, VIEW.id, float(entity % 7 + 1), (entity % 5) * NANOS) for entity in range(1, 60)]
    writer.apply(list(enumerate(events, 1)), len(events))
    reader = StoreReader(directory, SCHEMA, "w", lambda: 100, lambda: [])
    lam = lambda_per_ns(VIEW.half_life_seconds)
    try:
        for hours in (1, 5, 30):
            at = hours * 3600 * NANOS
            with reader.using():
                got = reader.top("view", at, 10, None)["entities"]
            assert_same_ranking([(e, s) for e, s in got], naive_ranking(events, VIEW.id, lam, at), 10)
        with reader.using():
            assert reader.top("view", 7 * NANOS, 10, None)["placement"] is None  # nothing placed yet
        # A new leader, and a later event of the leader at 7 s: at 7 s that one still leads
        # on its earlier events, and 999 is not there yet.
        first = naive_ranking(events, VIEW.id, lam, 7 * NANOS)[0][0]
        later = [EventRecord(999, VIEW.id, 50.0, 10 * NANOS), EventRecord(first, VIEW.id, 1.0, 10 * NANOS)]
        writer.apply(list(enumerate(later, len(events) + 1)), len(events) + 2, placement.encode({"signals": {0: 5}}))
        events += later
        reader._catch_up()
        with reader.using():
            before = reader.top("view", 7 * NANOS, 10, None)
        assert before["placement"] == {"signals": {"0": 5}}
        assert before["entities"][0][0] == first and 999 not in [e for e, _ in before["entities"]]
        assert_same_ranking([(e, s) for e, s in before["entities"]], naive_ranking(events, VIEW.id, lam, 7 * NANOS), 10)
        at = 40 * 3600 * NANOS
        with reader.using():
            got = reader.top("view", at, 10, None)["entities"]
            for k in range(1, 40):
                reader.top("view", at, k, None)
        assert got[0][0] == 999
        assert_same_ranking([(e, s) for e, s in got], naive_ranking(events, VIEW.id, lam, at), 10)
        assert 0 < len(reader._store._memo or {}) <= 8
    finally:
        reader.close()
        writer.close()


def test_each_catch_up_reports_how_long_it_held_answers_off(tmp_path: Path) -> None:
    """The service's tidal_store_catch_up_seconds: a catch-up holds off new answers from the
    moment it starts waiting for those under way until the view has moved, so that whole
    time is reported, once a catch-up; a catch-up skipped by the pacing reports nothing."""
    directory = tmp_path / "store"
    writer = SignalStore(RocksEngine(directory), SCHEMA)
    writer.follow("w", 10)
    writer.apply([(1, EventRecord(LEADER, VIEW.id, 1.0, NANOS))], 1)
    held: list[float] = []
    reader = StoreReader(directory, SCHEMA, "w", lambda: 10, lambda: [], caught_up=held.append)
    answering = threading.Event()

    def answer() -> None:
        with reader.using(), reader._view.reading():
            answering.set()
            time.sleep(0.2)  # an answer under way for 0.2 s: the stimulus, not a synchronisation

    try:
        reader._catch_up()
        assert len(held) == 1 and 0 <= held[0] < 1
        writer.apply([(2, EventRecord(LEADER, VIEW.id, 1.0, 2 * NANOS))], 2)
        slow = threading.Thread(target=answer)
        slow.start()
        assert answering.wait(10)
        reader._catch_up()
        slow.join()
        assert len(held) == 2 and held[1] >= 0.15, held
        assert reader._store.applied_seq == 2
        reader._catch_up(older_than_s=60)  # paced: not due
        assert len(held) == 2
    finally:
        reader.close()
        writer.close()
