"""What a peer's query answer must hold for the client to merge it (consumer.serving.api
writes them): read, not trusted. Each route's answer is decoded against its shape in one
pass (msgspec, strict JSON: no NaN or Infinity tokens); a missing field or a value of the
wrong type is a ``ValueError`` naming the path (``$.store.wal_id``), never a KeyError or a
string added to a score in the merge. Fields the client does not read are not checked."""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec


class StoreInfo(TypedDict):
    wal_id: str
    applied_seq: int
    wal_last_seq: int


class _Velocity(TypedDict):
    per_hour: float
    change: int


class _Signal(TypedDict):
    score: float
    count: int
    windows: dict[str, int]


class Signal(_Signal, total=False):
    velocity: _Velocity


class _Answer(TypedDict):
    store: StoreInfo
    group_wals: list[str]


class EntityAnswer(_Answer):
    """``GET /v1/entities/{id}``."""

    signals: dict[str, Signal]


class ScoresAnswer(_Answer):
    """``POST /v1/scores``: [entity, score] pairs."""

    entities: list[tuple[int, float]]


class TopAnswer(ScoresAnswer, total=False):
    """``/v1/top``: the list, highest first; the placement record (consumer.protocol.placement
    reads it, itself untrusted); with a hint, the hinted entities' ``scores``."""

    placement: Any
    scores: list[tuple[int, float]]


def read(raw: bytes, shape: type[Any]) -> dict[str, Any]:
    """``raw`` as an answer of ``shape``; ValueError (msgspec's DecodeError) if it is not JSON
    or not that shape."""
    answer: dict[str, Any] = msgspec.json.decode(raw, type=shape)
    return answer


def error_of(raw: bytes) -> str:
    """What a refusal (an HTTP status other than 200) says: its ``error``, else the text."""
    try:
        answer = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "not JSON"
    return str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer)
