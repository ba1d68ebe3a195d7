"""``SignalClient``: the group-wide answer, from every instance's query API.

Each instance's store holds the live events of its own WAL, and an entity's events are
spread over every WAL that ever consumed its partition. The client asks every peer (a
list of ``host:port``, or every address a DNS name resolves to: a Kubernetes headless
service) and adds the answers up (consumer.serving.answers). The answer is ``complete``
only when every peer answered and every WAL the group has committed from (the peers
report the commit marks' WALs) and every WAL a read-your-writes token names is among
those that answered. Nothing partial is presented as whole.

Top-k across stores, exact (an entity's score is the sum of its stores' scores, of any
sign), in the manner of TPUT (Cao and Wang, PODC 2004):

1. every store's own top ``DEPTH_FACTOR``·k (k + 1 once the stores' placement records
   showed each partition in one store: consumer.serving.group_top.depth); the candidates
   among them (those whose highest possible total can reach the k-th) and their exact
   totals, the stores that did not list one asked for it (none asked when every store
   listed it: consumer.serving.group_top). The lists come with the scores of the
   candidates the last top-k of the signal and k had to ask about (a hint: ``POST
   /v1/top``), so while the top holds still nobody is asked again. τ = the k-th highest
   of those totals, a lower bound of the true k-th. When every other entity, listed or
   not, is certainly below τ (Fagin's threshold on the deep lists), the k highest totals
   are the answer: one or two round trips. Where the
   stores' placement records place the group's events (consumer.protocol.placement), an
   entity scores 0 outside the stores holding its partition, and only those bound it: with
   keyed events and no partition moved, the lists alone settle it;
2. every store's entities worth at least τ/h (h: the most stores one entity can be in, m
   stores or fewer with placement): an entity whose total reaches τ is worth at least τ/h
   in some store (the largest of h terms is at least their mean, a store without it
   counting 0), so none is missed; with τ ≤ 0 that is every entity;
3. the new candidates' exact totals; the k highest totals are the answer.

Every step asks for the same ``at`` (fixed once, at the client), so every store scores
the same moment.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import urlencode

from consumer.protocol.placement import Homes, as_held
from consumer.serving import answers, group_top, shapes
from consumer.serving.group_top import TopPlan
from consumer.serving.params import MAX_K, MAX_SCORED, After, after
from consumer.serving.shapes import EntityAnswer, ScoresAnswer, TopAnswer

DEFAULT_TIMEOUT_S = 10.0
KEY_HASHES_KEPT = 100_000  # entities whose key hashes a client keeps (~10 MB), then starts over


class PeerError(RuntimeError):
    """A peer did not answer (unreachable, timed out, or answered an error)."""


class HasSeq(Protocol):
    """Anything carrying a durable (wal_id, seq): a DurableResult, an After."""

    wal_id: str
    seq: int


@dataclass
class GroupAnswer:
    """A merged answer: ``value`` (the entity's ``signals``, or the ``top`` list), the stores
    that answered (wal_id, applied_seq, wal_last_seq), the WALs that should have and did
    not (``missing``), and the peers that failed with why (``errors``)."""

    value: Any
    at_ns: int
    stores: list[dict[str, Any]]
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.errors and bool(self.stores)

    def to_json(self) -> dict[str, Any]:
        return {
            "at_ns": self.at_ns,
            "complete": self.complete,
            "missing_wals": self.missing,
            "errors": self.errors,
            "stores": self.stores,
            "result": self.value,
        }


def _token(item: str | HasSeq) -> After:
    if isinstance(item, str):
        return after(item)
    return After(item.wal_id, item.seq)


class SignalClient:
    def __init__(
        self,
        peers: Sequence[str] = (),
        *,
        peers_dns: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        wait_ms: int = 5000,
    ) -> None:
        """``peers``: ``host:port`` of every instance's ``metrics_port``; ``peers_dns``:
        ``name:port``, every A record of the name (looked up at each query).
        ``wait_ms``: how long a store may wait for a read-your-writes token's seq."""
        if not peers and not peers_dns:
            raise ValueError("SignalClient needs peers (host:port, ...) or peers_dns (name:port)")
        self._peers = list(peers)
        self._dns = peers_dns
        self._timeout_s = timeout_s
        self._wait_ms = wait_ms
        self._connections: dict[str, http.client.HTTPConnection] = {}  # peer -> kept alive
        # (signal, k) -> the candidates the last group top-k had to ask stores about: sent
        # with the next one's first step, so that while the top k holds still one round trip
        # answers exactly (consumer.serving.group_top).
        self._hints: dict[tuple[str, int], list[int]] = {}
        # peers -> whether their last group top-k's placement put each partition in one
        # store (group_top.depth: lists of k + 1 are then enough).
        self._apart: dict[tuple[str, ...], bool] = {}
        self._key_hashes: dict[int, int] = {}  # entity -> its key's murmur2 (Homes.of), bounded
        self._lock = threading.Lock()  # one query at a time on the connections (threads may share a client)

    def close(self) -> None:
        with self._lock:
            for peer in list(self._connections):
                self._drop(peer)

    def __enter__(self) -> SignalClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def peers(self) -> list[str]:
        """The peers asked now: the listed ones (each once) and every A record of the DNS name."""
        found = list(dict.fromkeys(self._peers))
        if self._dns:
            host, _, port = self._dns.rpartition(":")
            try:
                infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
            except (OSError, ValueError) as exc:
                raise PeerError(f"peers_dns {self._dns!r}: {exc}") from None
            addresses = [cast("tuple[str, int]", info[4]) for info in infos]  # AF_INET: (host, port)
            found += sorted({f"{host}:{number}" for host, number in addresses} - set(found))
        return found

    def entity(self, entity_id: int, *, at_ns: int | None = None, after: Iterable[str | HasSeq] = ()) -> GroupAnswer:
        """The entity's signals over every store, added up."""
        at = time.time_ns() if at_ns is None else at_ns
        tokens = [_token(item) for item in after]
        found, errors = self._ask_all("GET", f"/v1/entities/{entity_id}?" + self._query(at, tokens), EntityAnswer)
        stores = _one_per_wal(found)
        return _group(
            answers.merge_signals([answer["signals"] for answer in stores.values()]), at, stores, errors, tokens
        )

    def top(self, signal: str, k: int, *, at_ns: int | None = None, after: Iterable[str | HasSeq] = ()) -> GroupAnswer:
        """The k entities with the highest total score of ``signal`` at ``at_ns``, exact
        (the module's three steps): [entity, score] pairs, highest first."""
        at = time.time_ns() if at_ns is None else at_ns
        tokens = [_token(item) for item in after]
        peers = self.peers()
        depth = group_top.depth(k, len(peers), self._apart.get(tuple(peers), False), MAX_K)
        target = "/v1/top?" + urlencode({"signal": signal, "k": depth}) + "&" + self._query(at, tokens)
        hint = self._hints.get((signal, k), []) if len(peers) > 1 else []
        # With a hint: the lists, and the scores of the last answer's candidates (likely
        # this one's). A peer that refuses it (an instance older than POST /v1/top): without.
        hinted = None
        if hint:
            hinted = self._ask_all("POST", target, TopAnswer, peers, json.dumps({"entities": hint}).encode())
        if hinted is None or hinted[1]:
            hint, hinted = [], self._ask_all("GET", target, TopAnswer, peers)
        found, errors = hinted
        stores = _one_per_wal(found)
        if errors or not stores:
            return _group([], at, stores, errors, tokens)
        if len(stores) == 1:  # one store's own top k is exact
            (only,) = stores.values()
            return _group([list(pair) for pair in only["entities"][:k]], at, stores, errors, tokens)
        if len(self._key_hashes) > KEY_HASHES_KEPT:
            self._key_hashes.clear()
        homes = Homes.of_answers(
            {answer["peer"]: as_held(answer.get("placement")) for answer in stores.values()}, self._key_hashes
        )
        plan = TopPlan({answer["peer"]: answer["entities"] for answer in stores.values()}, depth, k, homes)
        self._apart[tuple(peers)] = plan.apart
        asked_peers, wanted = plan.asks()
        # Every store asked has scored the candidates already (a peer's hinted answer without
        # its scores is asked again, not read as zeros).
        with_hint = {peer: answer.get("scores") for peer, answer in found.items() if peer in asked_peers}
        if wanted and wanted <= set(hint) and all(scores is not None for scores in with_hint.values()):
            asked = {peer: dict(scores or ()) for peer, scores in with_hint.items()}
        else:
            asked = self._scores(asked_peers, signal, at, wanted, errors)
        if wanted and not errors:
            self._hints[(signal, k)] = sorted(wanted)[:MAX_SCORED]
        totals = plan.totals(asked, wanted)
        top = answers.ranked(totals, k)
        kth = top[-1] if len(top) == k and not errors else None
        if kth is not None and not plan.settled(kth):
            floor = kth[1]
            # floor <= 0: an entity absent from every store but one may still make the top
            # k, so every entity of every store is a candidate (the lowest float as floor).
            # An entity totalling at least floor > 0 scores at least floor / h in one of its
            # h homes.
            widest = len(stores) if homes is None else max(1, min(len(stores), homes.most_homes()))
            share = floor / widest if floor > 0 else -sys.float_info.max
            answering = {answer["peer"] for answer in stores.values()}  # one peer per WAL
            above, more_errors = self._ask_all(
                "GET",
                "/v1/top?" + urlencode({"signal": signal, "min_score": repr(share), "at": at}),
                TopAnswer,
                answering,
            )
            errors.update(more_errors)
            fresh = {entity for answer in above.values() for entity, _ in answer["entities"]} - set(totals)
            scored = self._scores(answering, signal, at, fresh, errors)
            totals.update(answers.add_scores(scores.items() for scores in scored.values()))
            top = answers.ranked(totals, k)
        return _group([[entity, score] for entity, score in top], at, stores, errors, tokens)

    def _scores(
        self, peers: set[str], signal: str, at: int, entities: set[int], errors: dict[str, str]
    ) -> dict[str, dict[int, float]]:
        """Each peer's scores of ``entities`` (those it has; requests of at most MAX_SCORED
        entities each)."""
        wanted = sorted(entities)
        found: dict[str, dict[int, float]] = {peer: {} for peer in peers}
        for start in range(0, len(wanted), MAX_SCORED):
            body = json.dumps({"signal": signal, "at": at, "entities": wanted[start : start + MAX_SCORED]}).encode()
            answered, more_errors = self._ask_all("POST", "/v1/scores", ScoresAnswer, peers, body)
            errors.update(more_errors)
            for peer, answer in answered.items():
                found[peer].update(answer["entities"])
        return {peer: scores for peer, scores in found.items() if peer not in errors}

    def _query(self, at: int, tokens: Sequence[After]) -> str:
        return urlencode([("at", at), *(("after", str(token)) for token in tokens), ("wait_ms", self._wait_ms)])

    def _ask_all(
        self, method: str, target: str, shape: type[Any], peers: Iterable[str] | None = None, body: bytes | None = None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Every peer's answer (peer -> JSON of ``shape``: consumer.serving.shapes), and the
        peers that failed (peer -> why). The
        requests all go out first, each on its peer's kept-alive connection, then the
        answers are read: the peers work at once, with no thread of ours in between."""
        with self._lock:
            asked = self.peers() if peers is None else sorted(peers)
            found, errors, sent = {}, {}, []
            for peer in asked:
                try:
                    self._send(peer, method, target, body)
                    sent.append(peer)
                except PeerError as exc:
                    errors[peer] = str(exc)
            for peer in sent:
                try:
                    found[peer] = {**self._receive(peer, method, target, body, shape), "peer": peer}
                except PeerError as exc:
                    errors[peer] = str(exc)
            return found, errors

    def _send(self, peer: str, method: str, target: str, body: bytes | None) -> None:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            connection = self._connection(peer)
            try:
                connection.request(method, target, body=body, headers=headers)
                return
            except (OSError, http.client.HTTPException) as exc:
                self._drop(peer)
                if attempt == 2 or not _stale(exc):
                    raise PeerError(f"{peer}: {exc or type(exc).__name__}") from None

    def _receive(self, peer: str, method: str, target: str, body: bytes | None, shape: type[Any]) -> dict[str, Any]:
        for attempt in (1, 2):
            if attempt == 2:  # asked again on a new connection (every request here only reads)
                self._send(peer, method, target, body)
            try:
                response = self._connections[peer].getresponse()
                raw = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._drop(peer)
                # A kept-alive connection the server closed meanwhile fails at once.
                if attempt == 2 or not _stale(exc):
                    raise PeerError(f"{peer}: {exc or type(exc).__name__}") from None
        if response.status != 200:
            raise PeerError(f"{peer}: HTTP {response.status}: {shapes.error_of(raw)}")
        try:
            return shapes.read(raw, shape)
        except ValueError as exc:
            raise PeerError(f"{peer}: HTTP 200, not a query answer: {exc}") from None

    def _connection(self, peer: str) -> http.client.HTTPConnection:
        connection = self._connections.get(peer)
        if connection is None:
            host, _, port = peer.rpartition(":")
            connection = self._connections[peer] = http.client.HTTPConnection(
                host.strip("[]"), int(port), timeout=self._timeout_s
            )
        return connection

    def _drop(self, peer: str) -> None:
        connection = self._connections.pop(peer, None)
        if connection is not None:
            connection.close()


def _stale(exc: BaseException) -> bool:
    """The error of a kept-alive connection the server had closed."""
    return isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError))


def _one_per_wal(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One answer per WAL (a peer listed twice, or by name and by address, counts once):
    the most recent store's."""
    stores: dict[str, dict[str, Any]] = {}
    for answer in found.values():
        wal_id = answer["store"]["wal_id"]
        if wal_id not in stores or answer["store"]["applied_seq"] > stores[wal_id]["store"]["applied_seq"]:
            stores[wal_id] = answer
    return stores


def _group(
    value: Any, at: int, stores: dict[str, dict[str, Any]], errors: dict[str, str], tokens: Sequence[After]
) -> GroupAnswer:
    known = {wal for answer in stores.values() for wal in answer["group_wals"]}
    return GroupAnswer(
        value,
        at,
        [{**answer["store"], "peer": answer["peer"]} for answer in stores.values()],
        answers.missing(stores, known, (token.wal_id for token in tokens)),
        errors,
    )
