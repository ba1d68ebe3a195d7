"""The query routes of the service's HTTP server (``metrics_port``), JSON in and out:

* ``GET /v1/entities/{id}?at=&after=&wait_ms=``: one entity's signals in this store;
* ``GET /v1/top?signal=&k=&at=&min_score=&after=&wait_ms=``: this store's highest scores
  of a signal type at a time (``k`` of them, or every one worth at least ``min_score``);
  ``POST`` with ``{"entities": [...]}``: the same, and those entities' exact scores read
  in the same state (``scores``: the group top-k's first step with its likely candidates);
* ``POST /v1/scores`` ``{"signal": ..., "at": ns, "entities": [...]}``: exact scores of
  given entities (the group-wide top-k's last step, consumer.serving.client).

Every answer names its store (wal_id, applied_seq, the WAL's last seq) and the WALs the
group has committed from. ``at`` defaults to the server's now; ``after=<wal_id>:<seq>``
(repeatable) holds the answer until this store has applied that seq (tokens of other
WALs are ignored here), up to ``wait_ms`` (default 5,000): then 503. Bad input: 400 with
the reason; unknown path: 404; no store on this instance: 503.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from consumer.serving import params
from consumer.serving.params import BadQuery
from consumer.serving.reader import NotYetApplied, StoreClosed, StoreReader
from walcore.storage.store import UnknownSignal

DEFAULT_WAIT_S = 5.0
MAX_BODY = 1 << 20
MAX_RANKED = 100_000  # entries one min_score answer may hold

Answer = tuple[int, dict[str, Any]]


class _NotFound(LookupError):
    pass


# What a query can be refused for, and its HTTP status.
_STATUS: list[tuple[type[Exception], int]] = [
    (_NotFound, 404),
    (BadQuery, 400),
    (UnknownSignal, 400),
    (NotYetApplied, 503),
    (StoreClosed, 503),
]
_REFUSALS = tuple(kind for kind, _ in _STATUS)


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise BadQuery(f"{name}: given {len(values)} times, once at most")
    return values[0]


class QueryApi:
    def __init__(
        self,
        reader: Callable[[], StoreReader | None],
        observe: Callable[[str, int, float], None] = lambda _path, _status, _seconds: None,
    ) -> None:
        """``reader()``: the store's reader, or None while there is none (no store on this
        instance, or the service still starting). ``observe(path, status, seconds)``: each
        answer, for metrics."""
        self._reader = reader
        self._observe = observe

    def handles(self, path: str) -> bool:
        return path.startswith("/v1/")

    def get(self, target: str) -> Answer:
        return self._timed(target, None)

    def post(self, target: str, body: bytes) -> Answer:
        return self._timed(target, body)

    def _timed(self, target: str, body: bytes | None) -> Answer:
        started = time.monotonic()
        status, answer = self._answer(target, body)
        self._observe(target, status, time.monotonic() - started)
        return status, answer

    def _answer(self, target: str, body: bytes | None) -> Answer:
        parts = urlsplit(target)
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            return 400, {"error": f"the query string {parts.query!r} is not one"}
        reader = self._reader()
        if reader is None:
            return 503, {
                "error": "this instance has no signal store to query ([store] enabled = false, or it is still starting)"
            }
        try:
            with reader.using():
                return 200, self._route(reader, parts.path, query, body)
        except _REFUSALS as exc:
            status = next(status for kind, status in _STATUS if isinstance(exc, kind))
            applied = {"applied_seq": exc.applied_seq} if isinstance(exc, NotYetApplied) else {}
            return status, {"error": str(exc), **applied}

    def _route(self, reader: StoreReader, path: str, query: dict[str, list[str]], body: bytes | None) -> dict[str, Any]:
        at = params.time_ns(_single(query, "at"))
        after = [params.after(token) for token in query.get("after", [])]
        reader.fresh(after, params.wait_s(_single(query, "wait_ms"), DEFAULT_WAIT_S))
        now = time.time_ns() if at is None else at
        if path.startswith("/v1/entities/") and body is None:
            return reader.entity(params.entity_id(unquote(path.removeprefix("/v1/entities/"))), now)
        if path == "/v1/top":
            signal = _single(query, "signal")
            if not signal:
                raise BadQuery("signal: required (a signal type's name, e.g. view)")
            scored = None if body is None else _entities(body)
            floor = _single(query, "min_score")
            k = _single(query, "k")
            if floor is None or k is not None:
                return reader.top(signal, now, params.top_k(k), None if floor is None else params.score(floor), scored)
            answer = reader.top(signal, now, MAX_RANKED + 1, params.score(floor), scored)
            if len(answer["entities"]) > MAX_RANKED:
                raise BadQuery(f"min_score {floor}: more than {MAX_RANKED} entities are worth that much; give k")
            return answer
        if path == "/v1/scores" and body is not None:
            return reader.scores(*_scores_request(body))
        raise _NotFound(
            f'no route {"POST" if body is not None else "GET"} {path} (see docs/operations.md, "Serving queries")'
        )


def _scores_request(body: bytes) -> tuple[str, list[int], int]:
    try:
        request = json.loads(body)
        signal, entities, at = request["signal"], request["entities"], request["at"]
    except (ValueError, TypeError, KeyError):
        raise BadQuery('the body is {"signal": name, "at": epoch ns, "entities": [ids]}') from None
    if not isinstance(signal, str):
        raise BadQuery("signal: a signal type's name")
    if type(at) is not int or not 0 <= at <= params.U64_MAX:
        raise BadQuery("at: epoch nanoseconds, 0 to 2**64-1")
    return signal, _entity_list(entities), at


def _entities(body: bytes) -> list[int]:
    """``POST /v1/top``'s body: ``{"entities": [ids]}``."""
    try:
        entities = json.loads(body)["entities"]
    except (ValueError, TypeError, KeyError):
        raise BadQuery('the body is {"entities": [ids]}') from None
    return _entity_list(entities)


def _entity_list(entities: object) -> list[int]:
    if not isinstance(entities, list) or len(entities) > params.MAX_SCORED:
        raise BadQuery(f"entities: a list of at most {params.MAX_SCORED} ids")
    if not all(type(e) is int and 0 <= e <= params.U64_MAX for e in entities):
        raise BadQuery("entities: each an integer from 0 to 2**64-1")
    return entities


def encode(answer: dict[str, Any]) -> bytes:
    """Strict JSON: a non-finite figure is refused (ValueError) rather than sent as the
    invalid token ``Infinity``. (Weights are clamped and past events only decay, so none is
    expected; the refusal is the last guard.)

    msgspec writes a top-100's answer ~10x faster than json (its floats are most of a
    query's encoding), but writes a non-finite float as ``null``. The answers' ``None``s
    are top-level values (``k``, ``min_score``, ``placement``), so any other ``null`` in the
    text (a non-finite figure; a string holding the word, or a nested ``None``, at the cost
    of the slow path only) hands the answer to json, which decides."""
    body = msgspec.json.encode(answer)
    if body.count(b"null") != sum(value is None for value in answer.values()):
        body = json.dumps(answer, allow_nan=False, separators=(",", ":")).encode()
    return body
