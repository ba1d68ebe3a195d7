"""`tidal-consumer query`: one entity's signals from the store, as JSON-ready values.

The store is opened read-only, so a query runs beside the service (it sees the store as
of its last write when opened). The Python API is walcore.storage.SignalStore.query.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from consumer.config import Settings
from walcore.storage.rocks import RocksEngine
from walcore.storage.store import SignalStore


class QueryError(RuntimeError):
    """The store cannot be read, or the time given is not one."""


def parse_time(text: str | None) -> int | None:
    """ISO 8601 (a naive time is UTC) or epoch nanoseconds, to epoch nanoseconds."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"--at {text!r}: not an ISO 8601 time (2026-11-25T12:00:00Z) or epoch nanoseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def query(settings: Settings, entity_id: int, at: str | None) -> dict[str, Any]:
    at_ns = parse_time(at)
    try:
        engine = RocksEngine(settings.store_dir(), read_only=True)
    except Exception as exc:  # noqa: BLE001 - RocksDB raises plain Exception
        raise QueryError(f"cannot open the signal store in {settings.store_dir()}: {exc}") from None
    store = SignalStore(engine, settings.schema())
    try:
        found = store.query(entity_id, at_ns)
        applied = store.applied_seq
    finally:
        store.close()
    return {"entity_id": entity_id, "at_ns": at_ns, "applied_seq": applied,
            "signals": {name: {"score": summary.score, "count": summary.count,
                               "windows": {f"{window}s": count for window, count in summary.windows.items()},
                               **({"velocity": summary.velocity._asdict()} if summary.velocity else {})}
                        for name, summary in sorted(found.items())}}


def render(found: dict[str, Any]) -> str:
    lines = [f"entity {found['entity_id']} (store applied through seq {found['applied_seq']})"]
    if not found["signals"]:
        lines.append("  no events")
    for name, signal in found["signals"].items():
        windows = ", ".join(f"{window}: {count}" for window, count in signal["windows"].items())
        velocity = signal.get("velocity")
        extra = (f"; velocity {velocity['per_hour']:.1f}/h ({velocity['change']:+d} vs the window before)"
                 if velocity else "")
        lines.append(f"  {name}: score {signal['score']:.6g} ({signal['count']} events); {windows}{extra}")
    return "\n".join(lines)
