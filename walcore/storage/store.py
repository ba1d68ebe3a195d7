"""The signal store: WAL events applied into a StorageEngine, and queries over them.

Keyspaces (docs/store-format.md): ``events`` holds one entry per applied event, keyed
(entity, EVENT, signal type, timestamp, seq) -> weight; ``scores`` one decayed-score
aggregate per (entity, SCORE, signal type); ``top`` each type's forward-decay ranks of
those aggregates as sorted runs (walcore.storage.rank_runs), for top-k reads; ``meta`` the
last applied seq, the WAL it follows, each signal type's latest event timestamp and its
runs. Every apply or un-apply is one atomic write batch that also moves the applied seq,
so a crash at any moment leaves the store at a batch boundary: the WAL replays what
follows it (each seq applied exactly once), and un-applying a voided seq removes its event
entry in the same batch (removing it twice finds no entry: nothing happens).
"""

from __future__ import annotations

import json
import struct
import threading
import time
from array import array
from collections.abc import Collection, Iterable, Iterator
from typing import NamedTuple

import numpy as np

from walcore.format import CONTENT_KEY
from walcore.records import EventRecord
from walcore.schema import MAX_ABS_WEIGHT, Schema, SignalTypeDefinition
from walcore.storage import keys, rank_head, rank_runs, ranking
from walcore.storage.engine import Batch, StorageEngine
from walcore.storage.rank_runs import RankRuns
from walcore.storage.signals import (
    EMPTY,
    NANOS,
    SCORE_ROW,
    Score,
    Velocity,
    add_events,
    decayed_sum,
    decode_score,
    decode_scores,
    encode_score,
    encode_scores,
    lambda_per_ns,
    remove,
    value_at,
    values_at,
    velocity,
    window_counts,
)

_APPLIED_SEQ = b"applied_seq"
_WAL_ID = b"wal_id"
_TOP_INDEX = b"top_index"  # _RUNS_LAYOUT once the top keyspace holds every score as sorted runs
_RUNS_LAYOUT = b"runs+head"  # and each type's head is kept ("runs": before heads, 2026-12-04)
_MAX_REF = b"max_ref:"  # + signal type u16: the latest event timestamp applied of that type
_SCHEMA = b"schema"  # JSON {id: [name, half-life seconds]}: every signal type the store has folded with
_PLACEMENT = b"placement"  # the applier's record of where the applied events came from (opaque here)
_U64 = struct.Struct(">Q")
# Index entries checked against their scores at a time: few first (a top-10 reads about 10
# scores), more while the reader keeps pulling.
_FIRST_CHECK, _LAST_CHECK = 16, 1024
_WEIGHT = struct.Struct(">d")
# A following reader's walked top lists kept until its next refresh: a few (signal, k), each
# at most MAX_K long (consumer.serving.params), so a client asking every k keeps ~MBs, not more.
_MEMO_LISTS = 8
# A WAL row (walcore.format.CONTENT_KEY) as a numpy record.
WAL_ROW = np.dtype([("entity", "<u8"), ("signal", "<u2"), ("weight", "<f8"), ("timestamp", "<u8")])
assert WAL_ROW.itemsize == CONTENT_KEY.size


def top_order(item: tuple[int, float]) -> tuple[float, int]:
    """A top-k's order of (entity, score): highest score first, ties by lower entity id.
    The group top-k merges stores' lists in this same order (consumer.serving.answers)."""
    return -item[1], item[0]


Ranked = tuple[int, float, int, bytes]  # band, rank, entity, its current score as stored


def _leading(ranked: Iterable[Ranked], k: int | None) -> Iterator[tuple[int, bytes]]:
    """Current entries, highest rank first, up to the k-th and past it while a rank is within
    the rounding margin of the k-th's (the exact values then decide the order)."""
    last: tuple[int, float] | None = None
    for taken, (band, rank, entity, raw) in enumerate(ranked):
        if k is not None and taken >= k:
            assert last is not None
            if band != last[0] or rank < last[1] - ranking.rank_margin(last[1]):
                return
        else:
            last = (band, rank)
        yield entity, raw


def _rerank(
    batch: Batch,
    runs: RankRuns,
    *,
    after: np.ndarray,
    entity: np.ndarray,
    signal: np.ndarray,
    lam: np.ndarray,
    falling: Collection[int] = (),
    first: bool = False,
) -> None:
    """The index's whole maintenance for a batch (columns: one position per (entity, type)
    it changed; every score held, count > 0): each type's new scores written as one more
    sorted run, and its head (walcore.storage.rank_head) kept while its scores only rise
    (not a type in ``falling``, whose scores may fall in this batch)."""
    if not len(after):
        return
    keys_ = ranking.rank_keys(after["value"], after["ref_ns"], lam)
    # Grouped by type, each type's highest key first: one sort for the batch, then a radix
    # sort (u16 keys) that keeps that order within a type.
    descending = rank_runs.descending_order(keys_)
    by_signal = descending[np.argsort(signal[descending], kind="stable")]
    # The head's columns (key and entity first: the runs' entries) for the whole batch at once.
    columns = np.take(rank_head.rows(keys_, entity, after), by_signal, axis=1)
    signal = signal[by_signal]
    starts = np.flatnonzero(np.diff(signal)) + 1
    for start, end in zip([0, *starts.tolist()], [*starts.tolist(), len(signal)]):
        signal_id = int(signal[start])
        runs.add(batch, signal_id, columns[: rank_runs.COLUMNS, start:end], first=first)
        if first or (signal_id not in falling and runs.rising(signal_id)):
            # Only the type's HEAD highest changed scores can enter its head.
            changed = columns[:, start : min(end, start + rank_head.HEAD)]
            raw = None if first else runs.head(signal_id)
            head = rank_head.merged(rank_head.empty() if raw is None else rank_head.decode(raw), changed)
            if head is not None:
                batch.put("meta", rank_runs.head_key(signal_id), rank_head.encode(head))


class StoreMismatch(RuntimeError):
    """The store follows another WAL, or is ahead of this one: applying would mix logs."""


class SchemaMismatch(StoreMismatch):
    """The store folded a signal type with another name, id or half-life than this schema
    gives it: its scores would silently differ from what the configuration says."""


def _folding(types: dict[int, SignalTypeDefinition]) -> dict[int, tuple[str, float]]:
    """What of a schema the stored data depends on: per id, its name and half-life (windows
    and velocity are computed from the events at query time, so they may change freely)."""
    return {signal_id: (d.name, float(d.half_life_seconds)) for signal_id, d in types.items()}


def schema_conflicts(recorded: dict[int, tuple[str, float]], current: dict[int, tuple[str, float]]) -> list[str]:
    """How ``current`` contradicts what a store recorded (empty: it does not). A new type,
    or one no longer configured, is no contradiction."""
    found = [
        f"id {signal_id} was {recorded[signal_id][0]!r} with a half-life of {recorded[signal_id][1]:g} s, "
        f"now {name!r} with {half_life:g} s"
        for signal_id, (name, half_life) in sorted(current.items())
        if signal_id in recorded and recorded[signal_id] != (name, half_life)
    ]
    names = {name: signal_id for signal_id, (name, _) in recorded.items()}
    found += [
        f"{name!r} was id {names[name]}, now id {signal_id}"
        for signal_id, (name, _) in sorted(current.items())
        if name in names and names[name] != signal_id and signal_id not in recorded
    ]
    return found


class UnknownSignal(ValueError):
    """A query named a signal type the schema does not have."""


class SignalSummary(NamedTuple):
    """One signal type of one entity at a time: what ``tidal-consumer query`` prints."""

    score: float
    windows: dict[int, int]  # window seconds -> events in (at - window, at]
    velocity: Velocity | None  # for signal types with velocity = true
    count: int  # type: ignore[assignment]  # events applied, all time (shadows tuple.count, on purpose)


class SignalStore:
    def __init__(self, engine: StorageEngine, schema: Schema, *, follows: bool = False) -> None:
        """``follows``: a reader of a store another process writes (a RocksDB secondary),
        whose view moves only at ``refresh``: it keeps the top lists it walked until then."""
        self._engine = engine
        # (signal, k) -> the entities the index ranks first and their kept scores. A rank key
        # does not move with t (forward decay: walcore.storage.ranking), so one walk answers
        # every ``at`` past the type's latest event until the view moves: only the scores'
        # values at ``at`` are computed per query.
        self._memo: dict[tuple[int, int], tuple[list[int], np.ndarray]] | None = {} if follows else None
        self._view_meta: dict[bytes, bytes | None] = {}  # a following reader's meta reads (_meta)
        self._memo_lock = threading.Lock()  # the service's HTTP threads share a reader
        self._runs = RankRuns(engine)
        self._types: dict[int, SignalTypeDefinition] = {d.id: d for d in schema.by_name.values()}
        self._lambdas = {signal_id: lambda_per_ns(d.half_life_seconds) for signal_id, d in self._types.items()}
        self._lambda_of = np.zeros(2**16)  # λ by signal type id; 0: a type the schema does not have
        for signal_id, lam in self._lambdas.items():
            self._lambda_of[signal_id] = lam
        self._by_name = schema.by_name
        self._recorded = self._read_schema()
        conflicts = schema_conflicts(self._recorded, _folding(self._types))
        if conflicts:
            raise SchemaMismatch(
                f"the store was folded with other signal types than this configuration's [[signals]] "
                f"({'; '.join(conflicts)}): its scores would not be this schema's. Restore the "
                "[[signals]] it was built with, or move the store directory away to rebuild it from "
                "the WAL (only the retained part of it: docs/store-format.md)"
            )
        self._applied_seq = self._read_applied_seq()
        self._max_refs = {signal_id: self._max_ref(signal_id) for signal_id in self._types}

    def _read_schema(self) -> dict[int, tuple[str, float]]:
        raw = self._engine.get("meta", _SCHEMA)
        if raw is None:
            return {}
        return {
            int(signal_id): (str(name), float(half_life)) for signal_id, (name, half_life) in json.loads(raw).items()
        }

    def _read_applied_seq(self) -> int:
        raw = self._engine.get("meta", _APPLIED_SEQ)
        return 0 if raw is None else _U64.unpack(raw)[0]

    def _max_ref(self, signal: int) -> int:
        raw = self._meta(_MAX_REF + struct.pack(">H", signal))
        return 0 if raw is None else _U64.unpack(raw)[0]

    def _meta(self, key: bytes) -> bytes | None:
        """A meta value; a following reader's as read once in its view (``refresh`` forgets
        them): every answer reads a type's latest ref and the placement record."""
        if self._memo is None:
            return self._engine.get("meta", key)
        with self._memo_lock:
            if key not in self._view_meta:
                self._view_meta[key] = self._engine.get("meta", key)
            return self._view_meta[key]

    def refresh(self) -> None:
        """A reader beside the writer (RocksEngine secondary, after its catch_up): read the
        applied seq again, and forget the top lists walked in the old view."""
        self._applied_seq = self._read_applied_seq()
        if self._memo is not None:
            with self._memo_lock:
                self._memo.clear()
                self._view_meta.clear()

    @property
    def applied_seq(self) -> int:
        """Every live event with a seq up to this is applied (and none above it)."""
        return self._applied_seq

    def follow(self, wal_id: str, last_seq: int) -> None:
        """Bind the store to the WAL ``wal_id`` (first use), or check it follows it.
        Raises StoreMismatch for another WAL's store, or one ahead of the WAL."""
        raw = self._engine.get("meta", _WAL_ID)
        folding = {**self._recorded, **_folding(self._types)}  # types no longer configured stay recorded
        if folding != self._recorded:
            record = {str(signal_id): list(folded) for signal_id, folded in sorted(folding.items())}
            self._engine.put("meta", _SCHEMA, json.dumps(record).encode())
            self._recorded = folding
        if raw is None:
            self._engine.put("meta", _WAL_ID, wal_id.encode())
            self._engine.flush()
        elif raw.decode() != wal_id:
            raise StoreMismatch(f"the store follows WAL {raw.decode()}, not {wal_id}: give each WAL its own store")
        if self._applied_seq > last_seq:
            raise StoreMismatch(
                f"the store has applied up to seq {self._applied_seq} but the WAL ends at "
                f"{last_seq}: the WAL lost events the store holds (restored from an old copy?)"
            )
        self._index_scores()

    def _index_scores(self) -> None:
        """A store written before the index had its present layout (none, or an entry per
        score): every score put into ``top`` once, as one run per signal type."""
        if self._engine.get("meta", _TOP_INDEX) == _RUNS_LAYOUT:
            return
        batch = self._engine.batch()
        for key, _ in self._engine.scan("top", b""):
            batch.delete("top", key)
        found: dict[int, list[tuple[int, Score]]] = {signal: [] for signal in self._lambdas}
        for score_key, raw in self._engine.scan("scores", b""):
            entity, signal = keys.decode_score_key(score_key)
            if signal in found:
                found[signal].append((entity, decode_score(raw)))
        for signal, held in found.items():
            scores = np.array([tuple(score) for _, score in held], SCORE_ROW).reshape(len(held))
            self._runs.clear(batch, signal)
            _rerank(
                batch,
                self._runs,
                after=scores,
                entity=np.array([entity for entity, _ in held], np.uint64),
                signal=np.full(len(held), signal, np.uint16),
                lam=np.full(len(held), self._lambdas[signal]),
                first=True,
            )
            if held:
                self._max_refs[signal] = max(self._max_refs[signal], int(scores["ref_ns"].max()))
        for signal, max_ref in self._max_refs.items():
            batch.put("meta", _MAX_REF + struct.pack(">H", signal), _U64.pack(max_ref))
        batch.put("meta", _TOP_INDEX, _RUNS_LAYOUT)
        self._engine.write(batch)
        self._engine.flush()

    def apply(self, events: Iterable[tuple[int, EventRecord]], through_seq: int, placement: bytes | None = None) -> int:
        """Apply the events with seqs above the applied seq, and move it to ``through_seq``,
        in one atomic write. Returns how many were applied. ``events`` are live (never
        voided) and in seq order; signal types the schema no longer has are skipped.
        ``placement``: the caller's record of where the store's events came from, now with
        these (``placement()`` reads it back), written in the same atomic write."""
        seqs, rows = array("q"), bytearray()
        for seq, record in events:
            seqs.append(seq)
            rows += CONTENT_KEY.pack(*record[:4])
        return self.apply_rows(seqs, rows, through_seq, placement)

    def apply_rows(
        self,
        seqs: bytes | bytearray | array[int],
        rows: bytes | bytearray,
        through_seq: int,
        placement: bytes | None = None,
    ) -> int:
        """``apply`` for events as the WAL holds them: ``seqs`` native int64s, ``rows`` one
        CONTENT_KEY row (entity, type, weight, timestamp) per seq, in the same order."""
        applied = self._applied_seq
        if through_seq <= applied:
            return 0
        # The applier's hot path (benchmarks/store_bench.py): whole columns at a time, so
        # that Python touches each event only to hand its key and value to the engine.
        seq = np.frombuffer(seqs, np.int64)
        row = np.frombuffer(rows, WAL_ROW)
        lams = self._lambda_of[row["signal"]]
        live = (seq > applied) & (seq <= through_seq) & (lams > 0)
        if not live.all():
            seq, row, lams = seq[live], row[live], lams[live]
        entity, signal = row["entity"], row["signal"]
        weight = np.clip(row["weight"], -MAX_ABS_WEIGHT, MAX_ABS_WEIGHT)  # a WAL from before the bound
        falling = np.unique(signal[weight < 0]).tolist()
        score_keys, groups = keys.score_keys(entity, signal)
        scores = decode_scores(self._engine.get_many("scores", score_keys))
        added = add_events(scores, groups, weight, row["timestamp"], lams)
        encoded = encode_scores(added)
        batch = self._engine.batch()
        batch.put_many(
            "events",
            zip(
                keys.event_keys(entity, signal, row["timestamp"], seq),
                keys.split_fixed(weight.astype(">f8").tobytes(), _WEIGHT.size),
            ),
        )
        batch.put_many("scores", zip(score_keys, encoded))
        group_entity = np.empty(len(added), np.uint64)
        group_signal = np.empty(len(added), np.uint16)
        group_lam = np.empty(len(added))
        group_entity[groups], group_signal[groups], group_lam[groups] = entity, signal, lams
        _rerank(
            batch, self._runs, after=added, entity=group_entity, signal=group_signal, lam=group_lam, falling=falling
        )
        self._runs.fell(batch, falling)
        for signal_id in np.unique(signal).tolist():
            latest = int(row["timestamp"][signal == signal_id].max())
            if latest > self._max_refs[signal_id]:
                self._max_refs[signal_id] = latest
                batch.put("meta", _MAX_REF + struct.pack(">H", signal_id), _U64.pack(latest))
        if placement is not None:
            batch.put("meta", _PLACEMENT, placement)
        batch.put("meta", _APPLIED_SEQ, _U64.pack(through_seq))
        self._engine.write(batch)
        self._applied_seq = through_seq
        return len(seq)

    def placement(self) -> bytes | None:
        """The last ``placement`` an apply wrote (None: none yet)."""
        return self._meta(_PLACEMENT)

    def unapply(self, events: Iterable[tuple[int, EventRecord]]) -> int:
        """Remove voided events that were applied (one atomic write); those not in the
        store are skipped. Returns how many were removed."""
        candidates = [
            (record, keys.event_key(record.entity_id, record.signal_type, record.timestamp_nanos, seq))
            for seq, record in events
            if seq <= self._applied_seq and record.signal_type in self._lambdas
        ]
        # One engine call for the lot: RocksDB's events memtable sorts itself per read.
        held = self._engine.get_many("events", [event_key for _, event_key in candidates])
        batch = self._engine.batch()
        scores: dict[bytes, Score] = {}
        count = 0
        for (record, event_key), raw in zip(candidates, held):
            if raw is None:
                continue
            lam = self._lambdas[record.signal_type]
            score_key = keys.score_key(record.entity_id, record.signal_type)
            score = scores[score_key] if score_key in scores else self._score(score_key)
            weight = min(max(record.weight, -MAX_ABS_WEIGHT), MAX_ABS_WEIGHT)  # as apply_rows clamped it
            scores[score_key] = remove(score, weight, record.timestamp_nanos, lam)
            batch.delete("events", event_key)
            count += 1
        if count:
            for score_key, score in scores.items():
                if score.count:
                    batch.put("scores", score_key, encode_score(score))
                else:  # its last event went: the entity has no such signal any more
                    batch.delete("scores", score_key)
            touched = [(*keys.decode_score_key(score_key), score) for score_key, score in scores.items()]
            fell = {signal for _, signal, _ in touched}
            self._runs.fell(batch, fell)
            changed = [(entity, signal, score) for entity, signal, score in touched if score.count]
            signals = np.array([signal for _, signal, _ in changed], np.uint16)
            _rerank(
                batch,
                self._runs,
                after=np.array([tuple(score) for _, _, score in changed], SCORE_ROW),
                entity=np.array([entity for entity, _, _ in changed], np.uint64),
                signal=signals,
                lam=self._lambda_of[signals],
                falling=fell,
            )
            self._engine.write(batch)
        return count

    def _score(self, score_key: bytes) -> Score:
        """A stored score, or EMPTY where the (entity, type) has none."""
        raw = self._engine.get("scores", score_key)
        return EMPTY if raw is None else decode_score(raw)

    def flush(self) -> None:
        """Make every apply so far durable: the WAL may then be checkpointed at applied_seq."""
        self._engine.flush()

    def query(self, entity_id: int, at_ns: int | None = None) -> dict[str, SignalSummary]:
        """Each signal type the entity has events of: its decayed score, window counts and
        (where the schema asks) velocity at ``at_ns`` (default: now). Only events at or
        before ``at_ns`` count."""
        at = time.time_ns() if at_ns is None else at_ns
        prefix = keys.tag_prefix(entity_id, keys.Tag.SCORE)
        found: dict[str, SignalSummary] = {}
        for score_key, raw in self._engine.scan("scores", prefix, keys.prefix_end(prefix)):
            _, signal = keys.decode_score_key(score_key)
            definition = self._types.get(signal)
            if definition is None:
                continue
            score = decode_score(raw)
            # Velocity compares the smallest window with the one before it.
            widest = max(*definition.windows_seconds, 2 * definition.windows_seconds[0] if definition.velocity else 0)
            if at >= score.ref_ns:
                recent = self._events(entity_id, signal, max(0, at - widest * NANOS + 1), at)
                value = value_at(score, at, self._lambdas[signal])
            else:  # a time before the latest event: from the events up to it
                recent = self._events(entity_id, signal, 0, at)
                value = decayed_sum(recent, at, self._lambdas[signal])
            stamps = [ts for ts, _ in recent]
            found[definition.name] = SignalSummary(
                value,
                window_counts(stamps, at, definition.windows_seconds),
                velocity(stamps, at, definition.windows_seconds[0]) if definition.velocity else None,
                score.count,
            )
        return found

    def signal_id(self, name: str) -> int:
        """The id of the signal type ``name``; UnknownSignal names the known ones."""
        definition = self._by_name.get(name)
        if definition is None:
            raise UnknownSignal(f"unknown signal type {name!r} (known: {', '.join(sorted(self._by_name))})")
        return definition.id

    def top(
        self, signal: str, at_ns: int, k: int | None = None, min_score: float | None = None
    ) -> list[tuple[int, float]]:
        """The entities with the highest decayed scores of ``signal`` at ``at_ns``: (entity,
        score), highest first (ties: lower entity id first); at most ``k`` of them, only those
        worth at least ``min_score``. Entities with no event of the type at or before
        ``at_ns`` are not ranked.

        At or after the type's latest event (the usual "now"), the index's runs are walked
        from their highest ranks: about k entries and their scores, a chunk of each run
        (walcore.storage.rank_runs). Before it, an entity's kept score may include events
        after ``at_ns``, which no rank order can skip: every entity of the type is scored
        from its events (O(entities))."""
        signal_id = self.signal_id(signal)
        lam = self._lambdas[signal_id]
        if at_ns < self._max_ref(signal_id):
            found = [
                (entity, value)
                for _, _, entity, raw in self._current(signal_id)
                if (value := self._score_at(entity, signal_id, decode_score(raw), at_ns)) is not None
            ]
        else:
            floor = None
            if min_score is not None:  # ranks below the threshold's are worth less at at_ns
                floor = ranking.key_below(*ranking.band_and_rank(min_score, at_ns, lam))
            entities, scores = self._leaders(signal_id, k, floor)
            found = list(zip(entities, values_at(scores, at_ns, lam)))
        if min_score is not None:
            found = [(entity, score) for entity, score in found if score >= min_score]
        found.sort(key=top_order)
        return found if k is None else found[:k]

    def _leaders(self, signal: int, k: int | None, floor: int | None) -> tuple[list[int], np.ndarray]:
        """The entities the index ranks first (``_leading``'s cut) and their kept scores; a
        following reader's top k (no ``floor``) from its memo, walked once a view."""
        if self._memo is None or k is None or floor is not None:
            return self._walk(signal, k, floor)
        with self._memo_lock:
            kept = self._memo.get((signal, k))
        if kept is None:
            kept = self._walk(signal, k, None)
            with self._memo_lock:
                if len(self._memo) >= _MEMO_LISTS:
                    del self._memo[next(iter(self._memo))]  # the oldest
                self._memo[(signal, k)] = kept
        return kept

    def _walk(self, signal: int, k: int | None, floor: int | None) -> tuple[list[int], np.ndarray]:
        """``_leaders`` read from the type's head, or where the answer may reach past it, from
        the index's runs and the scores, in one state."""
        if not self._runs.rising(signal):
            held = list(_leading(self._current(signal, floor), k))
            return [entity for entity, _ in held], decode_scores([raw for _, raw in held])
        # A head is kept while the type's scores only rise, in a store of the present layout
        # (none there: the type has no score yet); a store opened without ``follow`` may
        # predate heads.
        if self._meta(_TOP_INDEX) == _RUNS_LAYOUT:
            raw = self._runs.head(signal)
            head = rank_head.empty() if raw is None else rank_head.decode(raw)
            count = rank_head.taken(head, k, floor)
            if count is not None:
                return head[rank_runs.ENTITY, :count].tolist(), rank_head.scores(head, count)
        leading = self._firsts(signal, k, floor)  # an entity's first entry is current
        raws = self._engine.get_many("scores", [keys.score_key(e, signal) for e in leading])
        held = [(entity, raw) for entity, raw in zip(leading, raws) if raw is not None]
        return [entity for entity, _ in held], decode_scores([raw for _, raw in held])

    def _firsts(self, signal: int, k: int | None, floor: int | None = None) -> list[int]:
        """While no score of the type has fallen: the entities of each entity's first entry
        (its highest, which is current) in rank order, cut as ``_leading`` cuts (with
        ``floor``: those ranked at or above it). In columns, a block's entries taken in
        growing slices from 2k: a walk's first block holds the heads of every run (thousands
        of entries) and a top-k needs about k of them."""
        walked = np.zeros((rank_runs.COLUMNS, 0), np.uint64)
        for block in self._runs.walk(signal, floor):
            start, size = 0, block.shape[1] if k is None else 2 * k
            while start < block.shape[1]:
                part = block[:, start : start + size]
                start, size = start + size, 2 * size
                walked = rank_runs.newest_per_entity(np.concatenate((walked, part), axis=1))
                cut = None if k is None else ranking.cut(walked[rank_runs.KEY], k)
                if cut is not None:
                    return walked[rank_runs.ENTITY, :cut].tolist()  # type: ignore[no-any-return]
        return walked[rank_runs.ENTITY].tolist()  # type: ignore[no-any-return]

    def _current(self, signal: int, floor: int | None = None) -> Iterator[Ranked]:
        """The signal's current index entries, highest rank first, one per entity (with
        ``floor``: those ranked at or above it). Each candidate's score is read (in growing
        blocks, once an entity): an entry whose key is not its score's is stale."""
        lam = self._lambdas[signal]
        known: dict[int, bytes | None] = {}
        emitted: set[int] = set()
        size = _FIRST_CHECK
        for block in self._runs.walk(signal, floor):
            start = 0
            while start < block.shape[1]:
                part = block[:, start : start + size]
                start, size = start + size, min(2 * size, _LAST_CHECK)
                entities = part[rank_runs.ENTITY].tolist()
                unseen = sorted(set(entities).difference(known))
                raws = self._engine.get_many("scores", [keys.score_key(entity, signal) for entity in unseen])
                known.update(zip(unseen, raws))
                stored = [known[entity] for entity in entities]
                scores = decode_scores(stored)
                scored = ranking.rank_keys(scores["value"], scores["ref_ns"], np.full(len(stored), lam))
                live = rank_runs.current(part[rank_runs.KEY], scored) & (scores["count"] > 0)
                bands, ranks = ranking.bands_and_ranks_of(part[rank_runs.KEY])
                for band, rank, entity, raw, is_live in zip(
                    bands.tolist(), ranks.tolist(), entities, stored, live.tolist()
                ):
                    if is_live and entity not in emitted:
                        emitted.add(entity)
                        assert raw is not None
                        yield band, rank, entity, raw

    def scores_at(self, signal: str, entities: Iterable[int], at_ns: int) -> dict[int, float]:
        """The decayed score of ``signal`` at ``at_ns`` of each entity that has an event of
        the type at or before it (the others are left out)."""
        signal_id = self.signal_id(signal)
        wanted = list(entities)
        found = {}
        for entity, raw in zip(wanted, self._engine.get_many("scores", [keys.score_key(e, signal_id) for e in wanted])):
            score = None if raw is None else self._score_at(entity, signal_id, decode_score(raw), at_ns)
            if score is not None:
                found[entity] = score
        return found

    def _score_at(self, entity: int, signal: int, score: Score, at_ns: int) -> float | None:
        lam = self._lambdas[signal]
        if at_ns >= score.ref_ns:
            return value_at(score, at_ns, lam)
        events = self._events(entity, signal, 0, at_ns)
        return decayed_sum(events, at_ns, lam) if events else None

    def _events(self, entity_id: int, signal: int, from_ns: int, to_ns: int) -> list[tuple[int, float]]:
        """(timestamp, weight) of the entity's events of a type with from_ns <= ts <= to_ns, in order."""
        start = keys.event_key(entity_id, signal, from_ns, 0)
        end = (
            keys.event_key(entity_id, signal, to_ns + 1, 0)
            if to_ns < 2**64 - 1
            else keys.prefix_end(keys.events_prefix(entity_id, signal))
        )
        return [
            (keys.decode_event_key(key).timestamp_nanos, _WEIGHT.unpack(value)[0])
            for key, value in self._engine.scan("events", start, end)
        ]

    def close(self) -> None:
        self._engine.close()
