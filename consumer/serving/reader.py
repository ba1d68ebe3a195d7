"""The service's read view of its store: a RocksDB *secondary* instance that follows the
applier process (the store's only writer) from the service's HTTP threads.

Why a secondary: a read-only open is a snapshot as of the open, and reads in the applier
itself would sort its vector memtable per query and stall applying. A secondary replays
the writer's log into memtables of its own on ``catch_up``; reads never block the writer.

Freshness: a catch-up holds the interpreter lock (rocksdict does not release it) and holds off
the answers queued behind it, ~1.7 ms at 1,000 events/s written (docs/performance.md), so
it is paced and kept off the queries' path: while queries arrive, a follower thread catches
up every ``FOLLOW_EVERY_S``; a query finding the view older than ``MAX_STALENESS_S`` (the API
was idle) catches up first. An answer is therefore at most ``MAX_STALENESS_S`` behind what the
applier has written, and says the seq it is as of (``applied_seq``); an idle API costs
nothing. A read-your-writes token (``After``) naming this store's WAL waits, catching up
every ``WAIT_STEP_S``, until the store has applied its seq, at most the given bound; then
``NotYetApplied``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from consumer.protocol import placement
from consumer.serving.answers import signals_answer, store_info
from consumer.serving.params import After
from walcore.schema import Schema
from walcore.storage.rocks import RocksEngine
from walcore.storage.store import SignalStore

FOLLOW_EVERY_S = 0.25
MAX_STALENESS_S = 0.5
WAIT_STEP_S = 0.005
CLOSE_WAIT_S = 70.0  # the longest a query may take: a 60 s read-your-writes wait, and its reads


class NotYetApplied(RuntimeError):
    """A read-your-writes token's seq is not applied within the bound (HTTP 503)."""

    def __init__(self, token: After, applied_seq: int, waited_s: float) -> None:
        super().__init__(
            f"not yet applied (applied_seq {applied_seq}): {token} not in the store of WAL "
            f"{token.wal_id} after {waited_s:.1f} s; retry later"
        )
        self.applied_seq = applied_seq


class StoreClosed(RuntimeError):
    """The service is stopping: the store is closed to queries (HTTP 503)."""


class _ViewLock:
    """Answers share the view; a catch-up, which moves it, waits for those under way and holds
    new ones off. An answer reads several times (a top-k walks the index's runs, then reads
    its candidates' scores), and every read must see one state of the store; RocksDB's
    snapshots do not span a secondary's column families."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._reading = 0
        self._moving = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._moving)
            self._reading += 1
        try:
            yield
        finally:
            with self._changed:
                self._reading -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def moving(self) -> Iterator[None]:
        """Callers take turns (StoreReader._catching_up)."""
        with self._changed:
            self._moving = True
            self._changed.wait_for(lambda: not self._reading)
        try:
            yield
        finally:
            with self._changed:
                self._moving = False
                self._changed.notify_all()


class StoreReader:
    def __init__(
        self,
        store_dir: Path,
        schema: Schema,
        wal_id: str,
        wal_last_seq: Callable[[], int],
        group_wals: Callable[[], Iterable[str]],
        *,
        caught_up: Callable[[float], None] = lambda _seconds: None,
    ) -> None:
        """``wal_last_seq()``: the WAL's last seq now; ``group_wals()``: the WALs the group has
        committed from (the service's view of the commit marks); ``caught_up(seconds)``: after
        each catch-up, how long it held answers off (the service's metric)."""
        self.wal_id = wal_id
        self._wal_last_seq = wal_last_seq
        self._group_wals = group_wals
        self._caught_up = caught_up
        # The secondary's own files (its info log), beside the store: bounded, owner-only,
        # and of no use after a restart.
        self._own_dir = store_dir.with_name(store_dir.name + ".reader")
        shutil.rmtree(self._own_dir, ignore_errors=True)
        self._own_dir.mkdir(mode=0o700)
        self._engine = RocksEngine(store_dir, secondary=self._own_dir)
        self._store = SignalStore(self._engine, schema, follows=True)
        self._catching_up = threading.Lock()
        self._view = _ViewLock()
        self._caught_up_at = time.monotonic()
        self._wanted = threading.Event()  # a query came: keep the view fresh
        self._closing = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="tidal-store-follow", daemon=True)
        self._follower.start()
        # Queries run on the HTTP server's threads; close waits for those under way (a
        # closed RocksDB handle must never be read).
        self._users = threading.Condition()
        self._active = 0
        self._closed = False

    @contextlib.contextmanager
    def using(self) -> Iterator[StoreReader]:
        """Hold the store open for one query; StoreClosed once the service is stopping."""
        with self._users:
            if self._closed:
                raise StoreClosed("the service is stopping; ask another instance or retry after its restart")
            self._active += 1
        try:
            yield self
        finally:
            with self._users:
                self._active -= 1
                self._users.notify_all()

    def _catch_up(self, older_than_s: float = 0.0) -> None:
        with self._catching_up:
            if time.monotonic() - self._caught_up_at >= older_than_s:
                self._caught_up_at = started = time.monotonic()
                with self._view.moving():
                    if self._engine.catch_up():
                        self._store.refresh()
                self._caught_up(time.monotonic() - started)

    def _follow(self) -> None:
        """While queries arrive, catch up every FOLLOW_EVERY_S, off their path."""
        while self._wanted.wait() and not self._closing.is_set():
            self._wanted.clear()
            self._catch_up(FOLLOW_EVERY_S)
            self._closing.wait(FOLLOW_EVERY_S)

    def fresh(self, after: Iterable[After], wait_s: float) -> None:
        """Make the view fresh enough (MAX_STALENESS_S); with tokens naming this WAL, wait
        until their seqs are applied (raises NotYetApplied past ``wait_s``). Tokens of other
        WALs are for their stores."""
        self._wanted.set()
        self._catch_up(MAX_STALENESS_S)
        wanted = max((token for token in after if token.wal_id == self.wal_id), key=lambda t: t.seq, default=None)
        if wanted is None:
            return
        started = time.monotonic()
        while self._store.applied_seq < wanted.seq:
            waited = time.monotonic() - started
            if waited >= wait_s:
                raise NotYetApplied(wanted, self._store.applied_seq, waited)
            time.sleep(min(WAIT_STEP_S, wait_s - waited))
            self._catch_up()

    def _answer(self, at_ns: int) -> dict[str, Any]:
        return {
            "at_ns": at_ns,
            "store": store_info(self.wal_id, self._store.applied_seq, self._wal_last_seq()),
            "group_wals": sorted({self.wal_id, *self._group_wals()}),
        }

    def entity(self, entity_id: int, at_ns: int) -> dict[str, Any]:
        with self._view.reading():
            answer = self._answer(at_ns)
            return {"entity_id": entity_id, **answer, "signals": signals_answer(self._store.query(entity_id, at_ns))}

    def top(
        self, signal: str, at_ns: int, k: int | None, min_score: float | None, scored: Iterable[int] | None = None
    ) -> dict[str, Any]:
        """The top list; with ``scored``, also those entities' exact scores (``scores``), read
        in the same state of the store."""
        with self._view.reading():
            answer = self._answer(at_ns)
            ranked = self._store.top(signal, at_ns, k, min_score)
            also = None if scored is None else self._store.scores_at(signal, scored, at_ns)
            held = placement.decode(self._store.placement(), self._store.applied_seq)
        return {
            "signal": signal,
            "k": k,
            "min_score": min_score,
            **answer,
            "placement": placement.to_json(held),
            "entities": [[entity, score] for entity, score in ranked],
            **({} if also is None else {"scores": [[entity, score] for entity, score in also.items()]}),
        }

    def scores(self, signal: str, entities: Iterable[int], at_ns: int) -> dict[str, Any]:
        with self._view.reading():
            answer = self._answer(at_ns)
            found = self._store.scores_at(signal, entities, at_ns)
        return {"signal": signal, **answer, "entities": [[entity, score] for entity, score in found.items()]}

    def close(self) -> None:
        self._closing.set()
        self._wanted.set()
        self._follower.join()
        with self._users:
            self._closed = True
            self._users.wait_for(lambda: self._active == 0, timeout=CLOSE_WAIT_S)
        self._store.close()
        shutil.rmtree(self._own_dir, ignore_errors=True)
