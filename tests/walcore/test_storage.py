"""The storage layer: key order, the engines, and the store's aggregates against a naive
recomputation from the events (Σ w·e^(-λ(t-ts)), counts per window), for random streams
with out-of-order timestamps, random batch boundaries, voids and crashes."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer.config import Settings, SignalConfig, build_schema
from tests.support.walcore_helpers import assert_same_ranking, naive_ranking, naive_signals
from walcore.records import EventRecord
from walcore.schema import MAX_ABS_WEIGHT, Schema
from walcore.storage import keys, rank_head, rank_runs, ranking
from walcore.storage.engine import KEYSPACES, MemoryEngine, StorageEngine, WriteBatch
from walcore.storage.rocks import RocksEngine
from walcore.storage.signals import NANOS, Score, decode_score, lambda_per_ns
from walcore.storage.store import SchemaMismatch, SignalStore, UnknownSignal

SCHEMA = Settings().signal_schema()
TYPES = {d.id: d for d in SCHEMA.by_name.values()}
U64 = st.integers(0, 2**64 - 1)
U16 = st.integers(0, 2**16 - 1)


@given(st.tuples(U64, U16, U64, U64), st.tuples(U64, U16, U64, U64))
def test_event_keys_sort_like_their_fields_and_decode_back(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    ka, kb = keys.event_key(*a), keys.event_key(*b)
    assert (ka < kb) == (a < b) and (ka == kb) == (a == b)
    assert keys.decode_event_key(ka) == a


@given(st.tuples(U64, U16), st.tuples(U64, U16))
def test_score_keys_sort_like_their_fields_and_decode_back(a: tuple[int, int], b: tuple[int, int]) -> None:
    assert (keys.score_key(*a) < keys.score_key(*b)) == (a < b)
    assert keys.decode_score_key(keys.score_key(*a)) == a


COLUMNS = st.lists(st.tuples(U64, U16, U64, st.integers(0, 2**63 - 1)), max_size=40)


@given(COLUMNS)
def test_a_batch_s_keys_encoded_as_columns_are_the_one_by_one_keys(rows: list[tuple[int, int, int, int]]) -> None:
    """The applier encodes a batch's keys with numpy: the same bytes, and score keys
    distinct, in key order, each position pointing at its own."""
    entity, signal, ts, seq = (
        np.array(column, dtype)
        for column, dtype in zip(zip(*rows) if rows else ([], [], [], []), (np.uint64, np.uint16, np.uint64, np.int64))
    )
    assert keys.event_keys(entity, signal, ts, seq) == [keys.event_key(*row) for row in rows]
    distinct, positions = keys.score_keys(entity, signal)
    one_by_one = [keys.score_key(e, s) for e, s, _, _ in rows]
    assert distinct == sorted(set(one_by_one))
    assert [distinct[p] for p in positions] == one_by_one


@given(U64, U16, U64, U64)
def test_prefixes_bound_exactly_their_keys(entity: int, signal: int, ts: int, seq: int) -> None:
    key = keys.event_key(entity, signal, ts, seq)
    for prefix in (keys.tag_prefix(entity, keys.Tag.EVENT), keys.events_prefix(entity, signal)):
        end = keys.prefix_end(prefix)
        assert key.startswith(prefix) and prefix <= key and (end is None or key < end)
    # the next entity's keys are past the entity's prefix end
    if entity < 2**64 - 1:
        assert keys.event_key(entity + 1, 0, 0, 0) >= keys.prefix_end(keys.tag_prefix(entity, keys.Tag.EVENT))
    assert keys.prefix_end(b"\xff\xff") is None and keys.prefix_end(b"a\xff") == b"b"


@pytest.fixture(params=["memory", "rocksdb"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageEngine]:
    made: StorageEngine = MemoryEngine() if request.param == "memory" else RocksEngine(tmp_path / "rocks")
    yield made
    made.close()


def test_engines_keep_keyspaces_apart_scan_in_order_and_write_batches_whole(engine: StorageEngine) -> None:
    batch = engine.batch()
    for key in (b"b", b"a", b"c", b"ab"):
        batch.put("events", key, key * 2)
    batch.put("scores", b"a", b"other keyspace")
    batch.delete("events", b"c")
    engine.write(batch)
    assert list(engine.scan("events", b"")) == [(b"a", b"aa"), (b"ab", b"abab"), (b"b", b"bb")]
    assert list(engine.scan("events", b"ab", b"b")) == [(b"ab", b"abab")]
    # Each keyspace, whatever its memtable (RocksDB's writer: a vector, a hash table), scans
    # in key order from any start.
    for keyspace in KEYSPACES:
        batch = engine.batch()
        batch.put_many(keyspace, [(key, keyspace.encode()) for key in (b"k2", b"k10", b"k1\x00", b"j", b"k")])
        engine.write(batch)
        assert [key for key, _ in engine.scan(keyspace, b"k", b"k2")] == [b"k", b"k1\x00", b"k10"]
        assert engine.get_many(keyspace, [b"k10", b"k3"]) == [keyspace.encode(), None]
    assert engine.get("scores", b"a") == b"other keyspace" and engine.get("meta", b"a") is None
    engine.delete("events", b"a")
    engine.put("meta", b"x", b"1")
    assert engine.get("events", b"a") is None and engine.get("meta", b"x") == b"1"


def test_put_many_in_any_order_lets_a_repeated_key_keep_its_later_value(engine: StorageEngine) -> None:
    """put_many may reorder (RocksDB sorts by key); a key given twice in one call, or put
    earlier in the batch, still ends with the value given last."""
    batch = engine.batch()
    batch.put("events", b"m", b"first")
    # The later value of each repeated key sorts lower: a sort by (key, value) would lose it.
    batch.put_many("events", [(b"z", b"5"), (b"m", b"4"), (b"a", b"3"), (b"m", b"2"), (b"z", b"1")])
    engine.write(batch)
    assert list(engine.scan("events", b"")) == [(b"a", b"3"), (b"m", b"2"), (b"z", b"1")]
    assert engine.get_many("events", [b"z", b"nope", b"a", b"z"]) == [b"1", None, b"3", b"1"]


def test_a_rocksdb_store_survives_reopening_with_what_was_flushed(tmp_path: Path) -> None:
    store = SignalStore(RocksEngine(tmp_path / "s"), SCHEMA)
    store.apply([(1, EventRecord(7, 1, 2.0, 10 * NANOS)), (2, EventRecord(7, 1, 3.0, 20 * NANOS))], 2)
    store.flush()
    store.close()
    reader = SignalStore(RocksEngine(tmp_path / "s", read_only=True), SCHEMA)
    assert reader.applied_seq == 2 and reader.query(7, 20 * NANOS)["view"].count == 2
    reader.close()
    with pytest.raises(FileNotFoundError):
        RocksEngine(tmp_path / "missing", read_only=True)


def test_a_secondary_catch_up_says_whether_the_view_moved_after_every_kind_of_write(tmp_path: Path) -> None:
    """The query API's reader forgets its top lists only when a catch-up moved the view.
    Each kind of write the applier makes (a put, an overwrite of the same size, a delete, a
    batch) must move it and be read after; a memtable flush and a compaction move data into
    new files, not the view, and must still be read from those files; a catch-up with
    nothing written moves nothing."""
    writer = RocksEngine(tmp_path / "s")
    writer.put("meta", b"k", b"1")
    reader = RocksEngine(tmp_path / "s", secondary=tmp_path / "own")
    assert not reader.catch_up()  # the open saw the put
    assert reader.get("meta", b"k") == b"1"

    def batch() -> None:
        rows = writer.batch()
        rows.put("scores", b"b", b"2")
        rows.delete("meta", b"k")
        writer.write(rows)

    def compacted() -> None:
        writer._db.flush(True)  # the memtables into a new table file
        writer._db.compact_range(None, None)

    steps = [
        (lambda: writer.put("meta", b"k", b"2"), True, "meta", b"k", b"2"),
        (lambda: writer.put("meta", b"k", b"3"), True, "meta", b"k", b"3"),  # the same size again
        (lambda: writer.delete("meta", b"k"), True, "meta", b"k", None),
        (lambda: writer.put("meta", b"k", b"4"), True, "meta", b"k", b"4"),
        (batch, True, "meta", b"k", None),
        (lambda: writer.put("events", b"e", b"3"), True, "events", b"e", b"3"),
        (compacted, False, "events", b"e", b"3"),
        (writer.flush, False, "scores", b"b", b"2"),  # the log synced: nothing new to read
    ]
    for step, (write, moves, keyspace, key, value) in enumerate(steps):
        write()
        assert reader.catch_up() is moves, f"step {step}"
        assert reader.get(keyspace, key) == value, f"step {step}"
        assert not reader.catch_up(), f"step {step}: nothing was written since"
    # The writer reopened (an applier restarted): a new log and MANIFEST, the view moves on.
    writer.close()
    writer = RocksEngine(tmp_path / "s")
    assert not reader.catch_up()
    writer.put("meta", b"k", b"5")
    assert reader.catch_up() and reader.get("meta", b"k") == b"5"
    reader.close()
    writer.close()


def assert_matches(store: SignalStore, live: list[tuple[int, EventRecord]], at: int) -> None:
    for entity in {r.entity_id for _, r in live}:
        expected = naive_signals((r for _, r in live), entity, at, SCHEMA)
        got = store.query(entity, at)
        assert set(got) == set(expected), (entity, at)
        for name, (score, windows, velocity) in expected.items():
            summary = got[name]
            assert summary.score == pytest.approx(score, rel=1e-9, abs=1e-9), (entity, name, at)
            assert summary.windows == windows and summary.count == sum(
                1 for _, r in live if r.entity_id == entity and TYPES[r.signal_type].name == name
            )
            assert (tuple(summary.velocity) if summary.velocity else None) == velocity


HOUR = 3600 * NANOS
EVENTS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(sorted(TYPES)),
        st.floats(-100, 100, allow_nan=False, width=32),
        st.integers(0, 40 * 24).map(lambda h: h * HOUR // 4),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    EVENTS,
    st.lists(st.integers(1, 12), min_size=1, max_size=8),
    st.sets(st.integers(1, 60), max_size=6),
    st.integers(0, 45 * 24),
)
def test_stored_aggregates_equal_a_naive_recomputation(
    raw: list[tuple[int, int, float, int]], cuts: list[int], voided: set[int], later_hours: int
) -> None:
    """Out-of-order timestamps, random batch boundaries, some events voided after being
    applied; queried after the latest event and at times in between."""
    events = [
        (seq, EventRecord(entity, signal, float(weight), ts)) for seq, (entity, signal, weight, ts) in enumerate(raw, 1)
    ]
    store = SignalStore(MemoryEngine(), SCHEMA)
    store.follow("w1", len(events))  # as the applier opens it: readers take top-k from heads
    position, index = 0, 0
    while position < len(events):
        chunk = events[position : position + cuts[index % len(cuts)]]
        store.apply(chunk, chunk[-1][0])
        position += len(chunk)
        index += 1
    gone = [(seq, record) for seq, record in events if seq in voided]
    assert store.unapply(gone) == len(gone)
    assert store.unapply(gone) == 0  # a second removal finds nothing
    live = [(seq, record) for seq, record in events if seq not in voided]
    latest = max(r.timestamp_nanos for _, r in events)
    for at in (latest, latest + later_hours * HOUR, latest // 2, min(r.timestamp_nanos for _, r in events)):
        assert_matches(store, live, at)
        assert_ranks(store, live, at)
    assert_index_is_the_scores(store)


def assert_ranks(store: SignalStore, live: list[tuple[int, EventRecord]], at: int) -> None:
    """Top-k (k = 1, 2, all) and above-a-threshold answers against the naive ranking."""
    for signal_id, definition in TYPES.items():
        expected = naive_ranking((r for _, r in live), signal_id, lambda_per_ns(definition.half_life_seconds), at)
        for k in (1, 2, len(expected) + 1):
            assert_same_ranking(store.top(definition.name, at, k), expected, k)
        if expected:
            floor = expected[len(expected) // 2][1]
            above = store.top(definition.name, at, min_score=floor)
            assert {e for e, _ in above} == {e for e, s in expected if s >= floor} or all(
                abs(s - floor) <= 1e-9 * (1 + abs(floor)) for e, s in expected if (s >= floor) != (e in dict(above))
            )


def assert_index_is_the_scores(store: SignalStore) -> None:
    """The index's current entries are exactly the scores: one per (entity, type) held,
    with its value and ref (stale entries of older runs may remain; a reader skips them);
    and each type's head is its highest-ranked scores, as stored."""
    scores = {keys.decode_score_key(key): decode_score(raw) for key, raw in store._engine.scan("scores", b"")}
    indexed = {(entity, signal): decode_score(raw) for signal in TYPES for _, _, entity, raw in store._current(signal)}
    assert indexed == scores
    for signal in TYPES:
        assert_head_is_the_top(store, signal, {e: score for (e, s), score in scores.items() if s == signal})


def assert_head_is_the_top(store: SignalStore, signal: int, scores: dict[int, Score]) -> None:
    """While the type's scores only rise, its head holds min(HEAD, entities) of them, each
    with its stored score and that score's rank key, highest first, and no other entity
    ranks above its last one; once one has fallen, there is no head."""
    raw = store._runs.head(signal)
    if not store._runs.rising(signal):
        assert raw is None
        return
    head = rank_head.empty() if raw is None else rank_head.decode(raw)
    held = dict(zip(head[rank_runs.ENTITY].tolist(), rank_head.scores(head, head.shape[1]).tolist()))
    assert head.shape[1] == len(held) == min(rank_head.HEAD, len(scores))
    assert held == {entity: tuple(scores[entity]) for entity in held}
    lam = lambda_per_ns(TYPES[signal].half_life_seconds)
    ranked = {entity: ranking.band_and_rank(score.value, score.ref_ns, lam) for entity, score in scores.items()}
    keys_ = head[rank_runs.KEY]
    assert list(keys_) == sorted(keys_, reverse=True)
    bands, ranks = ranking.bands_and_ranks_of(keys_)
    for entity, band, rank in zip(head[rank_runs.ENTITY].tolist(), bands.tolist(), ranks.tolist()):
        assert band == ranked[entity][0] and abs(rank - ranked[entity][1]) <= ranking.rank_margin(rank)
    if head.shape[1]:
        last_band, last_rank = int(bands[-1]), float(ranks[-1])
        for entity, (band, rank) in ranked.items():
            if entity not in held:
                assert band < last_band or (band == last_band and rank <= last_rank + ranking.rank_margin(last_rank))


RANKED = st.lists(
    st.tuples(
        st.integers(0, 60),
        st.sampled_from(sorted(TYPES)),
        st.one_of(st.floats(-5, 5, allow_nan=False, width=32), st.just(1.0), st.just(-1.0)),
        st.integers(0, 10 * 24).map(lambda h: h * HOUR // 4),
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    RANKED,
    st.integers(1, 50),
    st.integers(0, 5 * 24),
    st.sampled_from([(2, 2, 1), (3, 4, 3), (512, 8, 512)]),
    st.booleans(),
)
# A zero weight later decays the score to the same rank, which rounds below the old one: near
# rank 0 by far more than a few key units (the head's reach is a rank margin, not units).
@example([(0, 1, 0.0, 0), (0, 1, 1.0, 0), (0, 1, 0.0, 900 * NANOS)], 1, 0, (2, 2, 1), False)
def test_top_k_from_the_index_equals_a_naive_ranking_with_mixed_signs(
    raw: list[tuple[int, int, float, int]], chunk: int, later_hours: int, layout: tuple[int, int, int], falling: bool
) -> None:
    """Many entities, weights of both signs (negative and zero scores rank below positive
    ones), equal weights at equal times (ties), voided events: read from the index's runs at
    or after the latest event, scored from the events before it. Small chunks and fan-ins
    (as well as the real ones) make walks cross chunks and runs merge, cascading. Without
    negative weights and voids, no score ever falls: the reader takes each entity's first
    entry as current, reading no score but the answer's, and answers from the type's head
    where the answer is within it (heads of 1 and 3 entities, too, are mostly not)."""
    events = [
        (seq, EventRecord(entity, signal, float(weight if falling else abs(weight)), ts))
        for seq, (entity, signal, weight, ts) in enumerate(raw, 1)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rank_runs, "CHUNK", layout[0])
        patch.setattr(rank_runs, "FANIN", layout[1])
        patch.setattr(rank_head, "HEAD", layout[2])
        store = SignalStore(MemoryEngine(), SCHEMA)
        store.follow("w1", len(events))
        for start in range(0, len(events), chunk):
            store.apply(events[start : start + chunk], events[min(start + chunk, len(events)) - 1][0])
        voided = events[::7] if falling else []
        store.unapply(voided)
        assert all(store._runs.rising(signal) for signal in TYPES) == (
            not voided and all(r.weight >= 0 for _, r in events)
        )
        live = [event for event in events if event not in voided]
        latest = max(r.timestamp_nanos for _, r in events)
        for at in (latest, latest + later_hours * HOUR, latest // 3):
            assert_ranks(store, live, at)
        assert_index_is_the_scores(store)


def test_top_k_at_now_reads_the_head_alone_and_past_it_a_chunk_a_run_and_about_k_scores() -> None:
    """The index's point: at or after the type's latest event, a top-10 over 5,000 entities
    reads the type's head (one value) and nothing else; a top-600, past the head's 256,
    walks the one run's first 3 chunks of 256 and reads about 600 scores, not all 5,000."""
    engine = MemoryEngine()
    store = SignalStore(engine, SCHEMA)
    store.follow("w1", 5000)
    store.apply(
        [(entity + 1, EventRecord(entity, 1, 1.0 + entity, 1_000 * NANOS + entity)) for entity in range(5000)], 5000
    )
    read: dict[str, int] = {"top": 0, "scores": 0}
    get_many = engine.get_many

    def counting(keyspace: str, wanted: Iterable[bytes]) -> list[bytes | None]:
        found = get_many(keyspace, wanted)
        read[keyspace] = read.get(keyspace, 0) + len(found)
        return found

    engine.get_many = counting  # type: ignore[method-assign]
    top = store.top("view", 2_000 * NANOS, 10)
    assert [entity for entity, _ in top] == list(range(4999, 4989, -1))
    assert read == {"top": 0, "scores": 0}
    top = store.top("view", 2_000 * NANOS, 600)
    assert [entity for entity, _ in top] == list(range(4999, 4399, -1))
    assert read["top"] == 3 and 600 <= read["scores"] <= 616
    # Equal scores: the lower entity id first, though its rank sorts below the other's.
    store.apply(
        [
            (5001, EventRecord(2**40, 2, 3.0, 50 * NANOS)),
            (5002, EventRecord(2**41, 2, 3.0, 50 * NANOS)),
            (5003, EventRecord(7, 2, 1.0, 50 * NANOS)),
        ],
        5003,
    )
    assert store.top("click", 60 * NANOS, 1) == [(2**40, pytest.approx(3.0 * 0.5 ** (10 / 21600)))]
    with pytest.raises(UnknownSignal, match="unknown signal type 'teleport'"):
        store.top("teleport", 0, 1)


def test_an_old_store_without_runs_or_heads_is_indexed_when_it_follows_its_wal() -> None:
    """A store written before the index was runs (no ``top`` entries and no marker, or an
    entry per score and marker "1") or before heads (runs, marker "runs") gets every score
    indexed once, at the applier's start, and the old entries go. Until then a reader walks
    what is there: a store that predates heads has none to trust."""
    for marker in (None, b"1", b"runs"):
        engine = MemoryEngine()
        store = SignalStore(engine, SCHEMA)
        store.follow("w1", 2)
        store.apply([(1, EventRecord(7, 1, 2.0, 10 * NANOS)), (2, EventRecord(8, 1, 3.0, 20 * NANOS))], 2)
        if marker == b"runs":  # the runs stay, no head: a head, had there been one, would be stale
            engine.put("meta", rank_runs.head_key(1), rank_head.encode(rank_head.empty()))
        else:
            for key, _ in list(engine.scan("top", b"")):
                engine.delete("top", key)
            for key, _ in list(engine.scan("meta", b"top_")):
                engine.delete("meta", key)
        engine.delete("meta", b"top_index")
        if marker is not None:
            engine.put("meta", b"top_index", marker)
        if marker == b"runs":
            assert [e for e, _ in SignalStore(engine, SCHEMA).top("view", 30 * NANOS, 5)] == [8, 7]
        if marker == b"1":
            engine.put("top", bytes(19), b"an entry of the old layout")
        reopened = SignalStore(engine, SCHEMA)
        reopened.follow("w1", 2)
        assert [e for e, _ in reopened.top("view", 30 * NANOS, 5)] == [8, 7]
        assert engine.get("top", bytes(19)) is None
        assert engine.get("meta", b"top_index") == b"runs+head"
        assert_index_is_the_scores(reopened)


@settings(max_examples=60, deadline=None)
@given(EVENTS, st.integers(1, 59), st.integers(1, 59))
def test_a_crash_before_the_flush_reapplies_nothing_twice_and_skips_nothing(
    raw: list[tuple[int, int, float, int]], flushed_at: int, crashed_at: int
) -> None:
    """Apply event by event; flush at one point, lose the unflushed rest (a crash) at a later
    one; then apply the whole log again, as the applier's catch-up does from the WAL. The
    index (small chunks and fan-in: merges on most applies) is the scores' again."""
    events = [
        (seq, EventRecord(entity, signal, float(weight), ts)) for seq, (entity, signal, weight, ts) in enumerate(raw, 1)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rank_runs, "CHUNK", 2)
        patch.setattr(rank_runs, "FANIN", 2)
        patch.setattr(rank_head, "HEAD", 2)
        engine = MemoryEngine()
        store = SignalStore(engine, SCHEMA)
        store.follow("w1", len(events))
        for seq, record in events[: max(flushed_at, crashed_at)]:
            store.apply([(seq, record)], seq)
            if seq == flushed_at:
                store.flush()
        engine.crash()
        store = SignalStore(engine, SCHEMA)
        assert store.applied_seq == (flushed_at if flushed_at <= len(events) else 0)  # the flushed state, whole
        store.apply(events, len(events))
        latest = max(r.timestamp_nanos for _, r in events)
        assert_matches(store, events, latest)
        assert_ranks(store, events, latest)
        assert_index_is_the_scores(store)


def test_weights_an_older_wal_holds_beyond_the_bound_are_clamped_and_every_figure_stays_finite() -> None:
    """Events accepted before MAX_ABS_WEIGHT existed (1.7e308 twice: a sum of inf, and an
    OverflowError for a query in the past): applied as +-1e15, removable as such."""
    view = next(d for d in TYPES.values() if d.name == "view")
    events = [
        (1, EventRecord(7, view.id, 1.7e308, 10 * HOUR)),
        (2, EventRecord(7, view.id, 1.7e308, 11 * HOUR)),
        (3, EventRecord(8, view.id, -1.7e308, 11 * HOUR)),
        (4, EventRecord(9, view.id, 1.0, 11 * HOUR)),
    ]
    store = SignalStore(MemoryEngine(), SCHEMA)
    store.apply(events, 4)
    lam = lambda_per_ns(view.half_life_seconds)
    for at in (11 * HOUR, 10 * HOUR + HOUR // 2, 20 * HOUR):  # after the latest event, and in the past
        score = store.query(7, at)["view"].score
        expected = sum(MAX_ABS_WEIGHT * math.exp(-lam * (at - ts)) for ts in (10 * HOUR, 11 * HOUR) if ts <= at)
        assert math.isfinite(score) and score == pytest.approx(expected, rel=1e-12)
        ranked = store.top("view", at, 3)
        assert all(math.isfinite(value) for _, value in ranked)
    assert [entity for entity, _ in store.top("view", 20 * HOUR, 3)] == [7, 9, 8]
    assert store.unapply(events[:2]) == 2
    assert store.query(7, 20 * HOUR).get("view") is None or store.query(7, 20 * HOUR)["view"].score == 0.0


def test_the_store_records_what_it_folded_with_and_refuses_a_schema_that_contradicts_it() -> None:
    def schema(*types: tuple[str, int, float, list[int]]) -> Schema:
        return build_schema(
            [
                SignalConfig(name=name, id=signal_id, half_life_seconds=half_life, windows_seconds=windows)
                for name, signal_id, half_life, windows in types
            ]
        )

    engine = MemoryEngine()
    first = SignalStore(engine, schema(("view", 1, 3600, [60]), ("click", 2, 600, [60])))
    first.follow("w", 0)
    # Other windows, a new type, a type dropped: the folded scores are still right.
    again = SignalStore(engine, schema(("view", 1, 3600, [5, 60, 3600]), ("like", 3, 60, [60])))
    again.follow("w", 0)
    for changed, says in [
        (("view", 1, 7200, [60]), "id 1 was 'view' with a half-life of 3600 s, now 'view' with 7200"),
        (("seen", 1, 3600, [60]), "id 1 was 'view'"),
        (("click", 4, 600, [60]), "'click' was id 2, now id 4"),
    ]:
        with pytest.raises(SchemaMismatch, match=re.escape(says)):
            SignalStore(engine, schema(changed))
    SignalStore(engine, schema(("click", 2, 600, [1])))  # the dropped type's record was kept: still consistent
    with pytest.raises(SchemaMismatch, match="id 3 was 'like'"):
        SignalStore(engine, schema(("like", 3, 61, [60])))


class DyingEngine(MemoryEngine):
    """Dies (raises) on its second write: what a store that wrote an apply in two steps
    would leave behind if the process died between them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, batch: WriteBatch) -> None:
        self.writes += 1
        if self.writes == 2:
            raise RuntimeError("died between two writes")
        super().write(batch)


def test_the_applied_seq_moves_in_the_same_atomic_write_as_the_events() -> None:
    view = SCHEMA.by_name["view"].id
    engine = DyingEngine()
    store = SignalStore(engine, SCHEMA)
    events = [(seq, EventRecord(seq % 3, view, 1.0, seq * NANOS)) for seq in range(1, 8)]
    store.apply(events, 7)  # one write: it survives the engine's death on a second one
    assert engine.writes == 1
    reopened = SignalStore(engine, SCHEMA)
    assert reopened.applied_seq == 7
    assert sum(summary.count for entity in range(3) for summary in reopened.query(entity, 10 * NANOS).values()) == 7


def test_a_score_halves_each_half_life_and_a_window_holds_what_is_after_at_minus_w(tmp_path: Path) -> None:
    """Literal values, not the code's own formulas: view's half-life is 3600 s and its
    windows 1 h, 1 d, 7 d; a window W at t holds events in (t - W, t] (docs/store-format.md)."""
    view = SCHEMA.by_name["view"]
    assert (view.half_life_seconds, tuple(view.windows_seconds)) == (3600.0, (3600, 86400, 604800))
    t0 = 1_700_000_000 * NANOS
    store = SignalStore(MemoryEngine(), SCHEMA)
    store.apply([(1, EventRecord(42, view.id, 8.0, t0))], 1)
    assert store.query(42, t0)["view"].score == 8.0
    assert store.query(42, t0 + 3600 * NANOS)["view"].score == pytest.approx(4.0, rel=1e-12)
    assert store.query(42, t0 + 7200 * NANOS)["view"].score == pytest.approx(2.0, rel=1e-12)
    assert store.query(42, t0 + 1800 * NANOS)["view"].score == pytest.approx(5.656854249492381, rel=1e-12)  # 8/sqrt 2
    at_edge = store.query(42, t0 + 3600 * NANOS)["view"].windows  # the event is exactly at t - 1 h
    assert at_edge == {3600: 0, 86400: 1, 604800: 1}
    assert store.query(42, t0 + 3600 * NANOS - 1)["view"].windows == {3600: 1, 86400: 1, 604800: 1}
    assert store.query(42, t0 - 1).get("view") is None or store.query(42, t0 - 1)["view"].windows[3600] == 0


def test_voiding_exactly_the_last_applied_seq_removes_it() -> None:
    view = SCHEMA.by_name["view"].id
    store = SignalStore(MemoryEngine(), SCHEMA)
    events = [(seq, EventRecord(9, view, float(seq), 100 * NANOS)) for seq in range(1, 6)]  # weights 1..5, one time
    store.apply(events, 5)
    assert store.unapply([events[-1]]) == 1  # seq 5, the applied seq itself
    summary = store.query(9, 100 * NANOS)["view"]
    assert (summary.score, summary.count, store.applied_seq) == (10.0, 4, 5)  # 1 + 2 + 3 + 4
    assert store.unapply([events[-1]]) == 0


def test_a_chunk_the_index_names_but_the_store_lacks_is_reported_by_key_and_what_to_do() -> None:
    """A damaged store (a chunk gone): the top-k says which chunk, and how to rebuild."""
    engine = MemoryEngine()
    store = SignalStore(engine, SCHEMA)
    store.apply([(1, EventRecord(7, 1, 2.0, 10 * NANOS))], 1)
    (chunk, _), *_ = engine.scan("top", b"")
    engine.delete("top", chunk)
    with pytest.raises(rank_runs.RunMissing, match=f"chunk {chunk.hex()} .* rebuilds it from the WAL"):
        store.top("view", 20 * NANOS, 5)
