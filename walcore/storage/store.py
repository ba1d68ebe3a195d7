"""The signal store: WAL events applied into a StorageEngine, and queries over them.

Keyspaces (docs/store-format.md): ``events`` holds one entry per applied event, keyed
(entity, EVENT, signal type, timestamp, seq) -> weight; ``scores`` one decayed-score
aggregate per (entity, SCORE, signal type); ``top`` the same aggregates keyed by signal
type and forward-decay rank (walcore.storage.ranking), for top-k reads; ``meta`` the last
applied seq, the WAL it follows and each signal type's latest event timestamp. Every
apply or un-apply is one atomic write batch that also moves the applied seq, so a crash
at any moment leaves the store at a batch boundary: the WAL replays what follows it
(each seq applied exactly once), and un-applying a voided seq removes its event entry in
the same batch (removing it twice finds no entry: nothing happens).
"""

from __future__ import annotations

import json
import struct
import time
from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from walcore.format import CONTENT_KEY
from walcore.records import EventRecord
from walcore.schema import MAX_ABS_WEIGHT, Schema, SignalTypeDefinition
from walcore.storage import keys, ranking
from walcore.storage.engine import Batch, StorageEngine
from walcore.storage.signals import (
    EMPTY,
    NANOS,
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
    velocity,
    window_counts,
)

_APPLIED_SEQ = b"applied_seq"
_WAL_ID = b"wal_id"
_TOP_INDEX = b"top_index"  # present once the top keyspace holds every score
_MAX_REF = b"max_ref:"  # + signal type u16: the latest event timestamp applied of that type
_SCHEMA = b"schema"  # JSON {id: [name, half-life seconds]}: every signal type the store has folded with
_U64 = struct.Struct(">Q")
_WEIGHT = struct.Struct(">d")
# A WAL row (walcore.format.CONTENT_KEY) as a numpy record.
_ROW = np.dtype([("entity", "<u8"), ("signal", "<u2"), ("weight", "<f8"), ("timestamp", "<u8")])
assert _ROW.itemsize == CONTENT_KEY.size


def _by_score(item: tuple[int, float]) -> tuple[float, int]:
    return -item[1], item[0]


def _leading(entries: Iterable[tuple[bytes, bytes]], k: int | None) -> Iterator[tuple[bytes, bytes]]:
    """``top`` entries read backwards, up to the k-th and past it while a key's rank is within
    the rounding margin of the k-th's (the exact values then decide the order)."""
    last: tuple[int, float] | None = None
    for taken, (key, raw) in enumerate(entries):
        _, band, rank, _ = ranking.decode_top_key(key)
        if k is not None and taken >= k:
            assert last is not None
            if band != last[0] or rank < last[1] - ranking.rank_margin(last[1]):
                return
        else:
            last = (band, rank)
        yield key, raw


def _rerank(
    batch: Batch,
    *,
    before: np.ndarray,
    after: np.ndarray,
    encoded: list[bytes],
    entity: np.ndarray,
    signal: np.ndarray,
    lam: np.ndarray,
) -> None:
    """Move each score of a batch (columns: one position per (entity, type)) to its new
    ``top`` key, the old one deleted first, in the same write batch."""
    new_keys = ranking.top_keys(signal, after["value"], after["ref_ns"], entity, lam)
    held = np.flatnonzero(before["count"] > 0)
    if len(held):
        old_keys = ranking.top_keys(
            signal[held], before["value"][held], before["ref_ns"][held], entity[held], lam[held]
        )
        for old_key, position in zip(old_keys, held.tolist()):
            if old_key != new_keys[position]:
                batch.delete("top", old_key)
    batch.put_many("top", zip(new_keys, encoded))


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
    def __init__(self, engine: StorageEngine, schema: Schema) -> None:
        self._engine = engine
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
        raw = self._engine.get("meta", _MAX_REF + struct.pack(">H", signal))
        return 0 if raw is None else _U64.unpack(raw)[0]

    def refresh(self) -> None:
        """A reader beside the writer (RocksEngine secondary, after its catch_up): read the
        applied seq again."""
        self._applied_seq = self._read_applied_seq()

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
        """A store written before the ranking existed: put every score into ``top`` once."""
        if self._engine.get("meta", _TOP_INDEX) is not None:
            return
        batch = self._engine.batch()
        for score_key, raw in self._engine.scan("scores", b""):
            entity, signal = keys.decode_score_key(score_key)
            score = decode_score(raw)
            if signal in self._lambdas and score.count:
                batch.put("top", ranking.top_key(signal, score.value, score.ref_ns, entity, self._lambdas[signal]), raw)
                self._max_refs[signal] = max(self._max_refs[signal], score.ref_ns)
        for signal, max_ref in self._max_refs.items():
            batch.put("meta", _MAX_REF + struct.pack(">H", signal), _U64.pack(max_ref))
        batch.put("meta", _TOP_INDEX, b"1")
        self._engine.write(batch)
        self._engine.flush()

    def apply(self, events: Iterable[tuple[int, EventRecord]], through_seq: int) -> int:
        """Apply the events with seqs above the applied seq, and move it to ``through_seq``,
        in one atomic write. Returns how many were applied. ``events`` are live (never
        voided) and in seq order; signal types the schema no longer has are skipped."""
        seqs, rows = array("q"), bytearray()
        for seq, record in events:
            seqs.append(seq)
            rows += CONTENT_KEY.pack(*record[:4])
        return self.apply_rows(seqs, rows, through_seq)

    def apply_rows(self, seqs: bytes | bytearray | array[int], rows: bytes | bytearray, through_seq: int) -> int:
        """``apply`` for events as the WAL holds them: ``seqs`` native int64s, ``rows`` one
        CONTENT_KEY row (entity, type, weight, timestamp) per seq, in the same order."""
        applied = self._applied_seq
        if through_seq <= applied:
            return 0
        # The applier's hot path (benchmarks/store_bench.py): whole columns at a time, so
        # that Python touches each event only to hand its key and value to the engine.
        seq = np.frombuffer(seqs, np.int64)
        row = np.frombuffer(rows, _ROW)
        lams = self._lambda_of[row["signal"]]
        live = (seq > applied) & (seq <= through_seq) & (lams > 0)
        if not live.all():
            seq, row, lams = seq[live], row[live], lams[live]
        entity, signal = row["entity"], row["signal"]
        weight = np.clip(row["weight"], -MAX_ABS_WEIGHT, MAX_ABS_WEIGHT)  # a WAL from before the bound
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
            batch, before=scores, after=added, encoded=encoded, entity=group_entity, signal=group_signal, lam=group_lam
        )
        for signal_id in np.unique(signal).tolist():
            latest = int(row["timestamp"][signal == signal_id].max())
            if latest > self._max_refs[signal_id]:
                self._max_refs[signal_id] = latest
                batch.put("meta", _MAX_REF + struct.pack(">H", signal_id), _U64.pack(latest))
        batch.put("meta", _APPLIED_SEQ, _U64.pack(through_seq))
        self._engine.write(batch)
        self._applied_seq = through_seq
        return len(seq)

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
        before: dict[bytes, Score] = {}  # each touched score as stored (its top key goes)
        scores: dict[bytes, Score] = {}
        count = 0
        for (record, event_key), raw in zip(candidates, held):
            if raw is None:
                continue
            lam = self._lambdas[record.signal_type]
            score_key = keys.score_key(record.entity_id, record.signal_type)
            if score_key not in before:
                before[score_key] = self._score(score_key)
            score = scores.get(score_key, before[score_key])
            weight = min(max(record.weight, -MAX_ABS_WEIGHT), MAX_ABS_WEIGHT)  # as apply_rows clamped it
            scores[score_key] = remove(score, weight, record.timestamp_nanos, lam)
            batch.delete("events", event_key)
            count += 1
        if count:
            for score_key, score in scores.items():
                entity, signal = keys.decode_score_key(score_key)
                lam = self._lambdas[signal]
                stored = before[score_key]
                batch.delete("top", ranking.top_key(signal, stored.value, stored.ref_ns, entity, lam))
                if score.count:
                    batch.put("scores", score_key, encode_score(score))
                    batch.put(
                        "top", ranking.top_key(signal, score.value, score.ref_ns, entity, lam), encode_score(score)
                    )
                else:  # its last event went: the entity has no such signal any more
                    batch.delete("scores", score_key)
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

        At or after the type's latest event (the usual "now"), the ``top`` keyspace is read
        backwards: about k keys (walcore.storage.ranking). Before it, an entity's kept score
        may include events after ``at_ns``, which no key order can skip: every entity of the
        type is scored from its events (a scan, O(entities))."""
        signal_id = self.signal_id(signal)
        lam = self._lambdas[signal_id]
        prefix = ranking.signal_prefix(signal_id)
        end = keys.prefix_end(prefix)
        if at_ns < self._max_ref(signal_id):
            found = self._scored_from_events(self._engine.scan("top", prefix, end), signal_id, at_ns)
        else:
            low = prefix
            if min_score is not None:  # keys below the threshold are worth less at at_ns
                band, rank = ranking.band_and_rank(min_score, at_ns, lam)
                low = max(prefix, ranking.bound_key(signal_id, band, rank - ranking.rank_margin(rank)))
            found = [
                (ranking.decode_top_key(key)[3], value_at(decode_score(raw), at_ns, lam))
                for key, raw in _leading(self._engine.scan_reverse("top", low, end), k)
            ]
        if min_score is not None:
            found = [(entity, score) for entity, score in found if score >= min_score]
        found.sort(key=_by_score)
        return found if k is None else found[:k]

    def _scored_from_events(
        self, entries: Iterable[tuple[bytes, bytes]], signal: int, at_ns: int
    ) -> list[tuple[int, float]]:
        found = []
        for key, raw in entries:
            entity = ranking.decode_top_key(key)[3]
            score = self._score_at(entity, signal, decode_score(raw), at_ns)
            if score is not None:
                found.append((entity, score))
        return found

    def scores_at(self, signal: str, entities: Iterable[int], at_ns: int) -> dict[int, float]:
        """The decayed score of ``signal`` at ``at_ns`` of each entity that has an event of
        the type at or before it (the others are left out)."""
        signal_id = self.signal_id(signal)
        found = {}
        for entity in entities:
            raw = self._engine.get("scores", keys.score_key(entity, signal_id))
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
