"""The signal store: WAL events applied into a StorageEngine, and queries over them.

Keyspaces (docs/store-format.md): ``events`` holds one entry per applied event, keyed
(entity, EVENT, signal type, timestamp, seq) -> weight; ``scores`` one decayed-score
aggregate per (entity, SCORE, signal type); ``meta`` the last applied seq and the WAL it
follows. Every apply or un-apply is one atomic write batch that also moves the applied
seq, so a crash at any moment leaves the store at a batch boundary: the WAL replays what
follows it (each seq applied exactly once), and un-applying a voided seq removes its event
entry in the same batch (removing it twice finds no entry: nothing happens).
"""

from __future__ import annotations

import struct
import time
from array import array
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from walcore.format import CONTENT_KEY
from walcore.records import EventRecord
from walcore.schema import Schema, SignalTypeDefinition
from walcore.storage import keys
from walcore.storage.engine import StorageEngine
from walcore.storage.signals import (
    EMPTY,
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
_U64 = struct.Struct(">Q")
_WEIGHT = struct.Struct(">d")
# A WAL row (walcore.format.CONTENT_KEY) as a numpy record.
_ROW = np.dtype([("entity", "<u8"), ("signal", "<u2"), ("weight", "<f8"), ("timestamp", "<u8")])
assert _ROW.itemsize == CONTENT_KEY.size
NANOS = 1_000_000_000


class StoreMismatch(RuntimeError):
    """The store follows another WAL, or is ahead of this one: applying would mix logs."""


class SignalSummary(NamedTuple):
    """One signal type of one entity at a time: what ``tidal-consumer query`` prints."""

    score: float
    windows: dict[int, int]  # window seconds -> events in (at - window, at]
    velocity: Velocity | None  # for signal types with velocity = true
    count: int  # events applied, all time


class SignalStore:
    def __init__(self, engine: StorageEngine, schema: Schema) -> None:
        self._engine = engine
        self._types: dict[int, SignalTypeDefinition] = {d.id: d for d in schema.by_name.values()}
        self._lambdas = {signal_id: lambda_per_ns(d.half_life_seconds) for signal_id, d in self._types.items()}
        self._lambda_of = np.zeros(2**16)  # λ by signal type id; 0: a type the schema does not have
        for signal_id, lam in self._lambdas.items():
            self._lambda_of[signal_id] = lam
        self._applied_seq = self._read_applied_seq()

    def _read_applied_seq(self) -> int:
        raw = self._engine.get("meta", _APPLIED_SEQ)
        return 0 if raw is None else _U64.unpack(raw)[0]

    @property
    def applied_seq(self) -> int:
        """Every live event with a seq up to this is applied (and none above it)."""
        return self._applied_seq

    def follow(self, wal_id: str, last_seq: int) -> None:
        """Bind the store to the WAL ``wal_id`` (first use), or check it follows it.
        Raises StoreMismatch for another WAL's store, or one ahead of the WAL."""
        raw = self._engine.get("meta", _WAL_ID)
        if raw is None:
            self._engine.put("meta", _WAL_ID, wal_id.encode())
            self._engine.flush()
        elif raw.decode() != wal_id:
            raise StoreMismatch(f"the store follows WAL {raw.decode()}, not {wal_id}: give each WAL its own store")
        if self._applied_seq > last_seq:
            raise StoreMismatch(f"the store has applied up to seq {self._applied_seq} but the WAL ends at "
                                f"{last_seq}: the WAL lost events the store holds (restored from an old copy?)")

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
        entity, signal, weight = row["entity"], row["signal"], row["weight"]
        score_keys, groups = keys.score_keys(entity, signal)
        scores = decode_scores(self._engine.get_many("scores", score_keys))
        batch = self._engine.batch()
        batch.put_many("events", zip(keys.event_keys(entity, signal, row["timestamp"], seq),
                                     keys.split_fixed(weight.astype(">f8").tobytes(), _WEIGHT.size)))
        batch.put_many("scores", zip(score_keys, encode_scores(add_events(scores, groups, weight, row["timestamp"],
                                                                          lams))))
        batch.put("meta", _APPLIED_SEQ, _U64.pack(through_seq))
        self._engine.write(batch)
        self._applied_seq = through_seq
        return len(seq)

    def unapply(self, events: Iterable[tuple[int, EventRecord]]) -> int:
        """Remove voided events that were applied (one atomic write); those not in the
        store are skipped. Returns how many were removed."""
        candidates = [(record, keys.event_key(record.entity_id, record.signal_type, record.timestamp_nanos, seq))
                      for seq, record in events
                      if seq <= self._applied_seq and record.signal_type in self._lambdas]
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
            score = scores.get(score_key) or self._score(score_key)
            scores[score_key] = remove(score, record.weight, record.timestamp_nanos, lam)
            batch.delete("events", event_key)
            count += 1
        if count:
            for score_key, score in scores.items():
                if score.count:
                    batch.put("scores", score_key, encode_score(score))
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
                value, window_counts(stamps, at, definition.windows_seconds),
                velocity(stamps, at, definition.windows_seconds[0]) if definition.velocity else None, score.count)
        return found

    def _events(self, entity_id: int, signal: int, from_ns: int, to_ns: int) -> list[tuple[int, float]]:
        """(timestamp, weight) of the entity's events of a type with from_ns <= ts <= to_ns, in order."""
        start = keys.event_key(entity_id, signal, from_ns, 0)
        end = keys.event_key(entity_id, signal, to_ns + 1, 0) if to_ns < 2**64 - 1 else keys.prefix_end(
            keys.events_prefix(entity_id, signal))
        return [(keys.decode_event_key(key).timestamp_nanos, _WEIGHT.unpack(value)[0])
                for key, value in self._engine.scan("events", start, end)]

    def close(self) -> None:
        self._engine.close()

