"""`tidal-consumer query`: an entity's signals or a top-k, from the local store or from
every instance of the group.

Local (``--wal-dir``/``--config``): the store is opened read-only beside the service (it
sees the store as of its last write when opened); one WAL's events only. Group
(``--peers``/``--peers-dns``): every instance's query API, merged into the group-wide
answer by consumer.serving.SignalClient; an answer that is not complete exits
ExitCode.PARTIAL.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from consumer.config import Settings
from consumer.serving.answers import signals_answer
from consumer.serving.client import GroupAnswer, SignalClient
from walcore.storage.rocks import RocksEngine
from walcore.storage.store import SignalStore, StoreMismatch, UnknownSignal


class QueryError(RuntimeError):
    """The store cannot be read."""


def local(
    settings: Settings, *, entity: int | None, top: int | None, signal: str | None, at_ns: int | None
) -> dict[str, Any]:
    """The answer of this instance's store alone (read-only, beside the service)."""
    at = time.time_ns() if at_ns is None else at_ns
    try:
        engine = RocksEngine(settings.store_dir(), read_only=True)
    except Exception as exc:  # noqa: BLE001 - RocksDB raises plain Exception
        raise QueryError(f"cannot open the signal store in {settings.store_dir()}: {exc}") from None
    try:
        store = SignalStore(engine, settings.signal_schema())
    except StoreMismatch as exc:
        engine.close()
        raise QueryError(f"the signal store in {settings.store_dir()}: {exc}") from None
    try:
        applied = store.applied_seq
        if entity is not None:
            return {
                "entity_id": entity,
                "at_ns": at,
                "applied_seq": applied,
                "signals": signals_answer(store.query(entity, at)),
            }
        assert top is not None and signal is not None
        return {
            "signal": signal,
            "k": top,
            "at_ns": at,
            "applied_seq": applied,
            "entities": [[e, score] for e, score in store.top(signal, at, top)],
        }
    finally:
        store.close()


def group(
    client: SignalClient,
    *,
    entity: int | None,
    top: int | None,
    signal: str | None,
    at_ns: int | None,
    after: list[str],
) -> GroupAnswer:
    if entity is not None:
        return client.entity(entity, at_ns=at_ns, after=after)
    assert top is not None and signal is not None
    return client.top(signal, top, at_ns=at_ns, after=after)


def _when(at_ns: int) -> str:
    return datetime.fromtimestamp(at_ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(found: dict[str, Any]) -> str:
    """Text for a local answer, or a group answer's JSON form (GroupAnswer.to_json)."""
    result = found.get("result", found)
    if "stores" in found:
        stores = ", ".join(f"{s['wal_id']}@{s['applied_seq']}" for s in found["stores"]) or "none"
        head = (
            f"{'complete' if found['complete'] else 'INCOMPLETE'} answer at {_when(found['at_ns'])} from "
            f"{len(found['stores'])} store(s) ({stores})"
        )
        lines = [head]
        if found["missing_wals"]:
            lines.append("  missing stores (WALs that did not answer): " + ", ".join(found["missing_wals"]))
        lines += [f"  peer {peer} failed: {why}" for peer, why in found["errors"].items()]
    else:
        subject = f"entity {found['entity_id']}" if "entity_id" in found else f"top {found['k']} of {found['signal']}"
        lines = [f"{subject} (store applied through seq {found['applied_seq']}) at {_when(found['at_ns'])}"]
    if isinstance(result, list) or "entities" in result:
        ranked = result if isinstance(result, list) else result["entities"]
        lines += [f"  {rank:>4}. entity {entity}: score {score:.6g}" for rank, (entity, score) in enumerate(ranked, 1)]
        return "\n".join(lines or ["  no entities"])
    signals = result.get("signals", result)
    if not signals:
        lines.append("  no events")
    for name, signal in signals.items():
        windows = ", ".join(f"{window}: {count}" for window, count in signal["windows"].items())
        velocity = signal.get("velocity")
        extra = (
            f"; velocity {velocity['per_hour']:.1f}/h ({velocity['change']:+d} vs the window before)"
            if velocity
            else ""
        )
        lines.append(f"  {name}: score {signal['score']:.6g} ({signal['count']} events); {windows}{extra}")
    return "\n".join(lines)


__all__ = ["QueryError", "UnknownSignal", "group", "local", "render"]
