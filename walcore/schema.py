"""Signal schema: which signal types exist, their numeric ids and decay parameters.

Carried over from the seed's SchemaBuilder: names are identifiers, names and ids are
unique, half-lives are positive, windows are non-empty and kept deduplicated and
sorted. The WAL stores the numeric id (u16); the consumer maps wire names to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from walcore.records import U16_MAX

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# The largest |weight| an event may carry. Scores are sums of weights times decay factors
# at most 1, so with this bound no sum of fewer than 10^293 events can overflow a float:
# every stored and returned figure stays finite (an event beyond it is rejected to the DLQ;
# the store clamps one an older WAL holds, walcore.storage.store).
MAX_ABS_WEIGHT = 1e15


class SchemaError(ValueError):
    """A schema definition breaks a rule; the message names the signal and the field."""


@dataclass(frozen=True)
class SignalTypeDefinition:
    name: str
    id: int
    half_life_seconds: float
    windows_seconds: tuple[int, ...]
    velocity: bool = False  # (λ per nanosecond: walcore.storage.signals.lambda_per_ns)


class SchemaBuilder:
    def __init__(self) -> None:
        self._by_name: dict[str, SignalTypeDefinition] = {}
        self._ids: set[int] = set()

    def signal(
        self,
        name: str,
        id: int,
        half_life_seconds: float,
        windows_seconds: list[int] | tuple[int, ...],
        velocity: bool = False,
    ) -> SchemaBuilder:
        where = f"signal {name!r}"
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise SchemaError(f"{where}: name must be a lowercase identifier ([a-z][a-z0-9_]*, <= 64 chars)")
        if name in self._by_name:
            raise SchemaError(f"{where}: duplicate name")
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= U16_MAX:
            raise SchemaError(f"{where}: id must be an integer in 0..{U16_MAX}, got {id!r}")
        if id in self._ids:
            raise SchemaError(f"{where}: duplicate id {id}")
        if not isinstance(half_life_seconds, (int, float)) or not (
            math.isfinite(half_life_seconds) and half_life_seconds > 0
        ):
            raise SchemaError(f"{where}: half_life_seconds must be a positive finite number, got {half_life_seconds!r}")
        windows = tuple(sorted(set(windows_seconds)))
        if not windows:
            raise SchemaError(f"{where}: windows_seconds must not be empty")
        if any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in windows):
            raise SchemaError(f"{where}: windows_seconds must be positive integers, got {list(windows_seconds)}")
        self._by_name[name] = SignalTypeDefinition(name, id, float(half_life_seconds), windows, velocity)
        self._ids.add(id)
        return self

    def build(self) -> Schema:
        if not self._by_name:
            raise SchemaError("a schema needs at least one signal type")
        return Schema(dict(self._by_name))


class Schema:
    def __init__(self, by_name: dict[str, SignalTypeDefinition]) -> None:
        self.by_name = by_name
        self.ids = {name: definition.id for name, definition in by_name.items()}

    def __repr__(self) -> str:
        return f"Schema({sorted(self.by_name)})"
