"""What one store answers, and how the answers of several stores add up. Pure.

A store holds the live events of one WAL (docs/store-format.md). Every figure it answers
is a sum over its events with one λ per signal type and the same windows in every store:
decayed scores, window counts, event counts, and velocity (events per hour in the
smallest window, and the change from the window before: both linear in counts). So the
group's answer is the sum of the stores' answers, and it is whole exactly when every WAL
the group has committed from answered (``missing``): never a partial sum presented as
whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from walcore.storage.store import SignalSummary, top_order


def store_info(wal_id: str, applied_seq: int, wal_last_seq: int) -> dict[str, Any]:
    """Which store answered and as of what: every live event of WAL ``wal_id`` up to
    ``applied_seq`` is in the answer; the WAL itself holds up to ``wal_last_seq``."""
    return {"wal_id": wal_id, "applied_seq": applied_seq, "wal_last_seq": wal_last_seq}


def signals_answer(found: Mapping[str, SignalSummary]) -> dict[str, Any]:
    """An entity's signals as JSON values (``tidal-consumer query --json``'s ``signals``)."""
    return {
        name: {
            "score": summary.score,
            "count": summary.count,
            "windows": {f"{window}s": count for window, count in summary.windows.items()},
            **({"velocity": summary.velocity._asdict()} if summary.velocity else {}),
        }
        for name, summary in sorted(found.items())
    }


def merge_signals(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``signals`` of one entity in several stores, added up: scores (fsum), counts,
    window counts, velocity."""
    merged: dict[str, Any] = {}
    for name in sorted({name for part in parts for name in part}):
        present = [part[name] for part in parts if name in part]
        signal: dict[str, Any] = {
            "score": math.fsum(p["score"] for p in present),
            "count": sum(p["count"] for p in present),
            "windows": {window: sum(p["windows"].get(window, 0) for p in present) for window in present[0]["windows"]},
        }
        velocities = [p["velocity"] for p in present if "velocity" in p]
        if velocities:
            signal["velocity"] = {
                "per_hour": math.fsum(v["per_hour"] for v in velocities),
                "change": sum(v["change"] for v in velocities),
            }
        merged[name] = signal
    return merged


def add_scores(parts: Iterable[Iterable[tuple[int, float]]]) -> dict[int, float]:
    """Per entity, the sum of its scores in every store that ranks it (exactly summed)."""
    terms: dict[int, list[float]] = {}
    for part in parts:
        for entity, score in part:
            terms.setdefault(entity, []).append(score)
    return {entity: math.fsum(found) for entity, found in terms.items()}


def ranked(totals: Mapping[int, float], k: int) -> list[tuple[int, float]]:
    """The k highest totals, highest first, ties by lower entity id (the store's order)."""
    return sorted(totals.items(), key=top_order)[:k]


def missing(answered: Iterable[str], known: Iterable[str], after: Iterable[str] = ()) -> list[str]:
    """The WALs whose stores should have answered and did not: every WAL the group knows of
    (commit marks name them) and every WAL a read-your-writes token names."""
    return sorted({*known, *after} - set(answered))


def beyond(floor: float, bound: float) -> bool:
    """Whether a total of ``floor`` is certainly above ``bound``: past the rounding of sums
    of a few floats (an equal total could still outrank it by entity id)."""
    return floor - bound > 1e-9 * max(1.0, abs(bound))
