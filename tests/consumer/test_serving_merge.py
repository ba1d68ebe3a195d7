"""The group-wide answer without a broker: three real stores (RocksDB, each behind the
service's own HTTP server and reader) holding random shares of one event stream, merged
by SignalClient, against a naive recomputation over all the events. Weights of both
signs, so the exact top-k's bounds are tried where they are weakest (totals at or below
zero, an entity positive in one store and negative in another). And the query inputs'
rules, as literal values."""

from __future__ import annotations

import http.client
import json
import math
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumer.config import Settings
from consumer.errors import KafkaUnavailable
from consumer.kafka.partitioning import entity_key_hashes
from consumer.ops.health import Endpoints, Health
from consumer.protocol import placement
from consumer.protocol.handoff import CommitMark, encode_mark
from consumer.serving import SignalClient, answers, params
from consumer.serving.api import QueryApi
from consumer.serving.api import encode as api_encode
from consumer.serving.group import UNREAD, GroupWals
from consumer.serving.group_top import DEPTH_FACTOR
from consumer.serving.reader import StoreReader
from tests.support.walcore_helpers import assert_same_ranking, naive_ranking, naive_signals
from walcore.records import EventRecord, SourcePosition
from walcore.storage.rocks import RocksEngine
from walcore.storage.signals import NANOS, lambda_per_ns
from walcore.storage.store import SignalStore

SCHEMA = Settings().signal_schema()
HOUR = 3600 * NANOS


@contextmanager
def stores(shares: list[list[EventRecord]], api: type[QueryApi] = QueryApi) -> Iterator[list[str]]:
    """One store per share, each served as an instance serves it (``api``: its query routes);
    yields the peers. Records with a source are placed (consumer.protocol.placement)."""
    with tempfile.TemporaryDirectory() as root:
        served = []
        try:
            for n, share in enumerate(shares):
                directory = Path(root, f"s{n}")
                writer = SignalStore(RocksEngine(directory), SCHEMA)
                writer.follow(f"wal{n}", len(share))
                # Records with sources are placed as the applier places them; without, the
                # store knows nothing of where its events came from.
                held = placement.observe(
                    {}, placement.runs_of(r.source for r in share), np.array([r.entity_id for r in share], np.uint64)
                )
                writer.apply(list(enumerate(share, 1)), len(share), placement.encode(held) if held else None)
                writer.close()
                wal_last_seq = len(share)
                reader = StoreReader(
                    directory,
                    SCHEMA,
                    f"wal{n}",
                    lambda last=wal_last_seq: last,
                    lambda: [f"wal{m}" for m in range(len(shares))],
                )
                endpoints = Endpoints("127.0.0.1", 0, Health(60.0), CollectorRegistry(), api(lambda r=reader: r))
                served.append((reader, endpoints))
            yield [f"127.0.0.1:{endpoints.port}" for _, endpoints in served]
        finally:
            for reader, endpoints in served:
                endpoints.close()
                reader.close()


EVENTS = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.sampled_from([1, 2]),
        st.one_of(st.floats(-3, 3, allow_nan=False, width=32), st.just(1.0)),
        st.integers(0, 48).map(lambda h: h * HOUR // 2),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=150,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS, st.sampled_from([1, 3, 10, 50]))
def test_merged_answers_and_top_k_equal_a_naive_recomputation_over_every_store(
    raw: list[tuple[int, int, float, int, int]], k: int
) -> None:
    everything = [EventRecord(entity, signal, float(weight), ts) for entity, signal, weight, ts, _ in raw]
    shares = [[record for record, (*_, store) in zip(everything, raw) if store == n] for n in range(3)]
    latest = max(r.timestamp_nanos for r in everything)
    with stores(shares) as peers, SignalClient(peers) as client:
        for at in (latest, latest + 5 * HOUR, latest // 2):
            for entity in {r.entity_id for r in everything[:10]}:
                answer = client.entity(entity, at_ns=at)
                assert answer.complete and len(answer.stores) == 3
                expected = naive_signals(everything, entity, at, SCHEMA)
                assert set(answer.value) == set(expected)
                for name, (score, windows, _) in expected.items():
                    assert answer.value[name]["score"] == pytest.approx(score, rel=1e-9, abs=1e-9)
                    assert answer.value[name]["windows"] == {f"{w}s": n for w, n in windows.items()}
            for name in ("view", "click"):
                definition = SCHEMA.by_name[name]
                naive = naive_ranking(everything, definition.id, lambda_per_ns(definition.half_life_seconds), at)
                answer = client.top(name, k, at_ns=at)
                assert answer.complete, answer.to_json()
                assert_same_ranking([tuple(pair) for pair in answer.value], naive, k)


@pytest.mark.parametrize(
    "placed,expected",
    [
        # An entity in no store's top-1 list that out-totals every listed one: the stop rule's
        # bound (each store's k-th, summed) must not let the first step's answer stand.
        ({0: [(1, 10.0), (4, 9.9), (2, -1.0)], 1: [(2, 6.0), (4, 5.9), (1, -9.0)], 2: [(3, 5.0), (4, 4.9)]}, (4, 20.7)),
        # Negative k-th scores: an entity absent from a store counts 0 there, not the k-th.
        ({0: [(1, -1.0), (5, -2.0), (2, -1.6), (3, -1.7)], 1: [(2, -1.0), (1, -1.5)], 2: [(3, -1.0)]}, (5, -2.0)),
        # Skewed: the first step's totals clear the bound, and are the answer.
        ({0: [(1, 50.0), (2, 1.0)], 1: [(1, 40.0), (3, 1.0)], 2: [(1, 30.0), (4, 2.0)]}, (1, 120.0)),
    ],
)
def test_group_top_k_stops_early_only_when_no_unlisted_entity_can_reach_the_kth(
    placed: dict[int, list[tuple[int, float]]], expected: tuple[int, float]
) -> None:
    view = SCHEMA.by_name["view"].id
    shares = [[EventRecord(entity, view, weight, HOUR) for entity, weight in placed[n]] for n in range(3)]
    assert answers.beyond(1.0, 0.0) and not answers.beyond(1e-12, 0.0)
    with stores(shares) as peers, SignalClient(peers) as client:
        answer = client.top("view", 1, at_ns=HOUR)
    assert answer.complete and len(answer.value) == 1
    assert answer.value[0][0] == expected[0] and answer.value[0][1] == pytest.approx(expected[1])


class _Counted(QueryApi):
    """The service's routes, each request's method and path recorded."""

    asked: ClassVar[list[str]] = []
    depths: ClassVar[list[int]] = []  # the k of each /v1/top request with one

    def get(self, target: str) -> tuple[int, dict[str, Any]]:
        self.asked.append("GET " + target.partition("?")[0])
        self._record_depth(target)
        return super().get(target)

    def post(self, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        self.asked.append("POST " + target.partition("?")[0])
        self._record_depth(target)
        return super().post(target, body)

    def _record_depth(self, target: str) -> None:
        self.depths += [int(k) for k in parse_qs(urlsplit(target).query).get("k", [])]


class _Older(QueryApi):
    """An instance from before POST /v1/top: the service's routes but that one."""

    def post(self, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if target.startswith("/v1/top"):
            return 404, {"error": "no route POST /v1/top"}
        return super().post(target, body)


def test_a_repeated_group_top_k_sends_its_last_candidates_with_the_lists_one_round_trip() -> None:
    """Keyed shares (each entity in one store): a group top-k must learn that the other
    stores lack its candidates, a second round trip. The next top-k of the signal and k sends
    those candidates with its first step and, while the top holds still, answers in one; when
    the candidates move (a time before the latest events ranks otherwise) it asks again, and
    every answer is the naive one. An instance that refuses the hint is asked without it."""
    view = SCHEMA.by_name["view"]
    lam = lambda_per_ns(view.half_life_seconds)
    # Entity e in store e % 3; the late half of the events reverses the early ranking.
    everything = [EventRecord(e, view.id, 1.0 + e, HOUR) for e in range(60)]
    everything += [EventRecord(e, view.id, 200.0 - 3 * e, 40 * HOUR) for e in range(0, 60, 2)]
    shares = [[r for r in everything if r.entity_id % 3 == n] for n in range(3)]
    latest, early = 40 * HOUR, 2 * HOUR
    with stores(shares, _Counted) as peers, SignalClient(peers) as client:
        rounds = []
        for at in (latest, latest, latest + HOUR, early, early):
            _Counted.asked.clear()
            answer = client.top("view", 10, at_ns=at)
            assert answer.complete
            assert_same_ranking([tuple(pair) for pair in answer.value], naive_ranking(everything, view.id, lam, at), 10)
            rounds.append(sorted(set(_Counted.asked)))
    lists, hinted, scored = ["GET /v1/top"], ["POST /v1/top"], ["POST /v1/scores"]
    assert rounds == [
        sorted(lists + scored),  # nothing known yet: the lists, then the candidates
        hinted,  # the same top: one round trip
        hinted,  # later, the same order (forward decay): one
        sorted(hinted + scored),  # another order: candidates the hint lacks are asked for
        hinted,
    ]
    with stores(shares, _Older) as peers, SignalClient(peers) as client:
        for _ in range(2):
            answer = client.top("view", 10, at_ns=latest)
            assert answer.complete and not answer.errors
            assert_same_ranking(
                [tuple(pair) for pair in answer.value], naive_ranking(everything, view.id, lam, latest), 10
            )


def sourced(entity: int, weight: float, ts: int, partition: int | None = None) -> EventRecord:
    """A view event from its key's partition of 4 (``partition``: from another one)."""
    home = int(entity_key_hashes(np.array([entity], np.uint64))[0]) % 4
    where = SourcePosition("signals", home if partition is None else partition, 0)
    return EventRecord(entity, SCHEMA.by_name["view"].id, weight, ts, None, where)


def keyed_shares(off_key: list[EventRecord], moved: bool = True) -> tuple[list[EventRecord], list[list[EventRecord]]]:
    """Keyed events of 200 entities over 4 partitions: store 0 consumed partitions 0 and 1,
    store 1 partition 2 and (``moved``) the later events of partition 1; store 2 partition 3,
    and ``off_key`` (events from a partition their key does not hash to)."""
    early = [sourced(e, 1.0 + (e * 37) % 101, HOUR) for e in range(200)]
    late = [sourced(e, 0.5 + (e * 53) % 97, 2 * HOUR) for e in range(0, 200, 3)]
    shares: list[list[EventRecord]] = [[], [], []]
    for record in early + late:
        partition = record.source.partition  # type: ignore[union-attr]
        store = {0: 0, 1: 1 if moved and record in late else 0, 2: 1, 3: 2}[partition]
        shares[store].append(record)
    shares[2].extend(off_key)
    return early + late + off_key, shares


@pytest.mark.parametrize("k", [1, 10, 50])
@pytest.mark.parametrize("moved", [False, True])
def test_keyed_stores_answer_the_group_top_k_exactly_in_one_round_trip_while_nothing_moved(k: int, moved: bool) -> None:
    """Every event in its key's partition (DurableProducer's keys): the stores' placement
    records say where each entity can be. While no partition moved, the lists alone settle
    the answer (one round trip, no scores asked), and once the client has seen that, it asks
    lists of k + 1, not 2k (group_top.depth); with one moved, its entities may be in two
    stores and are bounded so, from lists of 2k. Every answer is the naive one."""
    view = SCHEMA.by_name["view"]
    everything, shares = keyed_shares([], moved)
    at = 3 * HOUR
    naive = naive_ranking(everything, view.id, lambda_per_ns(view.half_life_seconds), at)
    with stores(shares, _Counted) as peers, SignalClient(peers) as client:
        for asking in ("first", "again"):
            _Counted.asked.clear()
            _Counted.depths.clear()
            answer = client.top("view", k, at_ns=at)
            assert moved or _Counted.asked == ["GET /v1/top"] * 3
            depth = DEPTH_FACTOR * k if moved or asking == "first" else k + 1
            assert _Counted.depths[:3] == [depth] * 3, asking
            assert answer.complete
            assert_same_ranking([tuple(pair) for pair in answer.value], naive, k)


def test_one_event_off_its_keys_partition_is_still_counted_in_the_group_top_k() -> None:
    """A producer that keyed one event otherwise: entity X (partition 0, store 0's, which
    lists it second) also has an event in store 2, from partition 3, too low for store 2's
    list. Trusting the partitions would rule store 2 out of X's total and settle on the
    leader L; store 2's placement record shows the event off its key's partition, nothing is
    placed, store 2 is asked for X, and X (6 + 5) is first, as the naive answer has it."""
    view = SCHEMA.by_name["view"]
    by_home: dict[int, list[int]] = {}
    for entity in range(400):
        by_home.setdefault(int(entity_key_hashes(np.array([entity], np.uint64))[0]) % 4, []).append(entity)
    leader, x = by_home[0][:2]
    shares = [
        [sourced(leader, 10.0, HOUR), sourced(x, 6.0, HOUR)],
        [sourced(e, 1.0, HOUR) for e in by_home[1][:5] + by_home[2][:5]],
        [sourced(e, 7.0, HOUR) for e in by_home[3][:12]] + [sourced(x, 5.0, HOUR, partition=3)],
    ]
    everything = [record for share in shares for record in share]
    with stores(shares) as peers, SignalClient(peers) as client:
        answer = client.top("view", 1, at_ns=HOUR)
    naive = naive_ranking(everything, view.id, lambda_per_ns(view.half_life_seconds), HOUR)
    assert answer.complete and answer.value == [[x, 11.0]] and naive[0] == (x, 11.0)


def test_a_store_named_by_the_group_that_does_not_answer_makes_the_answer_incomplete() -> None:
    shares = [[EventRecord(1, 1, 2.0, HOUR)], [EventRecord(1, 1, 3.0, HOUR)]]
    with stores(shares) as peers:
        with SignalClient(peers[:1]) as client:  # wal1's store is not asked
            answer = client.entity(1, at_ns=HOUR)
            assert not answer.complete and answer.missing == ["wal1"] and answer.value["view"]["score"] == 2.0
            assert not client.top("view", 1, at_ns=HOUR).complete
        with SignalClient([*peers, peers[0]]) as client:  # a peer listed twice counts once
            answer = client.entity(1, at_ns=HOUR)
            assert answer.complete and answer.value["view"]["score"] == 5.0 and len(answer.stores) == 2
            # a read-your-writes token of a WAL no peer answers for cannot be honoured
            assert client.entity(1, at_ns=HOUR, after=["walX:1"]).missing == ["walX"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1700000000000000000", 1_700_000_000_000_000_000),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("2026-11-25T12:00:00Z", 1_795_608_000_000_000_000),
        ("2026-11-25T13:00:00+01:00", 1_795_608_000_000_000_000),
        ("2026-11-25T12:00:00", 1_795_608_000_000_000_000),
    ],
)
def test_times_are_rfc3339_or_epoch_nanoseconds(text: str, expected: int) -> None:
    assert params.time_ns(text) == expected


@pytest.mark.parametrize("text", ["1969-12-31T23:59:59.5Z", "9999-12-31T00:00:00Z", str(2**64), "yesterday", "-5"])
def test_times_outside_the_event_range_or_not_times_are_refused_by_name(text: str) -> None:
    with pytest.raises(params.BadQuery, match=r"^at "):
        params.time_ns(text)


def test_tokens_ids_and_k_are_checked() -> None:
    assert params.after("9a3c7eaaafdf4ad0:1234") == params.After("9a3c7eaaafdf4ad0", 1234)
    assert params.entity_id(str(2**64 - 1)) == 2**64 - 1
    for bad in ("9a3c:0", "9a3c", ":5", "9a3c:-1", f"w:{2**64}"):
        with pytest.raises(params.BadQuery, match="after"):
            params.after(bad)
    for bad in ("-1", str(2**64), "1e3", ""):
        with pytest.raises(params.BadQuery, match="entity"):
            params.entity_id(bad)
    for bad in ("0", "10001", None, "x"):
        with pytest.raises(params.BadQuery, match=r"^k "):
            params.top_k(bad)
    with pytest.raises(params.BadQuery, match="finite"):
        params.score("inf")


def test_hostile_requests_get_a_reason_and_the_server_keeps_answering() -> None:
    """Bodies over the bound are refused before being read; malformed or oversized asks are
    400s with the rule; the server answers the next request as before."""
    with stores([[EventRecord(1, 1, 2.0, HOUR)]]) as peers:
        host, port = peers[0].split(":")

        def post(body: bytes, length: int | None = None, target: str = "/v1/scores") -> tuple[int, bytes]:
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.putrequest("POST", target)
            connection.putheader("Content-Length", str(len(body) if length is None else length))
            connection.endheaders()
            connection.send(body[:1024])
            response = connection.getresponse()
            answer = response.status, response.read()
            connection.close()
            return answer

        status, body = post(b"x", length=2**31)
        assert status == 413 and b"at most 1048576 bytes" in body
        for request, reason in [
            (b"not json", b"the body is"),
            (b'{"signal": "view", "at": 0, "entities": [-1]}', b"entities: each an integer"),
            (b'{"signal": "view", "at": 0, "entities": [1], "x": 1}', b""),
        ]:
            status, body = post(request)
            assert (status == 400 and reason in body) or (reason == b"" and status == 200), body
        top = f"/v1/top?signal=view&k=5&at={HOUR}"
        for request, reason in [
            (b"[1]", b"the body is"),
            (b'{"entities": "1"}', b"a list of at most 10000 ids"),
            (b'{"entities": [1.5]}', b"entities: each an integer"),
        ]:
            status, body = post(request, target=top)
            assert status == 400 and reason in body, body
        status, body = post(b'{"entities": [1, 9]}', target=top)  # the list, and the scores of those it holds
        assert status == 200 and json.loads(body)["scores"] == [[1, 2.0]] and json.loads(body)["entities"] == [[1, 2.0]]
        many = ('{"signal": "view", "at": 0, "entities": [' + ",".join(["1"] * 10_001) + "]}").encode()
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("POST", "/v1/scores", body=many)
        assert connection.getresponse().status == 400
        with SignalClient(peers) as client:
            assert client.entity(1, at_ns=HOUR).value["view"]["score"] == 2.0


@contextmanager
def answering(body: bytes) -> Iterator[str]:
    """A peer that answers every request with ``body`` (HTTP 200, JSON's content type)."""

    class Fixed(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


STORE = b'"store": {"wal_id": "w9", "applied_seq": 1, "wal_last_seq": 1}, "group_wals": ["w9"]'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>busy</html>", "malformed"),
        (b'{"store": {"wal_id": "x", "applied_seq": NaN}}', "malformed"),  # strict JSON: no NaN token
        (b"[1, 2]", "Expected `object`"),
        (b'{"answer": 42}', "missing required field `store`"),
        (b'{"store": {"wal_id": 7, "applied_seq": 1, "wal_last_seq": 1}, "group_wals": []}', "$.store.wal_id"),
        (
            b"{"
            + STORE
            + b', "signals": {"view": {"score": "high", "count": 1, "windows": {}}}, "entities": [["a", 1]]}',
            "$.",
        ),
    ],
)
def test_a_peer_answering_what_is_not_a_query_answer_is_an_error_never_a_share(body: bytes, reason: str) -> None:
    """A peer's answer is read, not trusted: one that is not a query answer of its route (a
    proxy's page, a non-finite figure, a list, an object without the store, a wrong type
    where the merge adds or ranks: a score as a string, an entity id as a string) makes the
    group answer incomplete, with the peer and the path of what is wrong, and the good
    store's share is still there: never a KeyError, never a string added to a score."""
    share = [[EventRecord(1, 1, 2.0, HOUR)]]
    with stores(share) as peers, answering(body) as bad, SignalClient([*peers, bad]) as client:
        answer = client.entity(1, at_ns=HOUR)
        assert not answer.complete and answer.value["view"]["score"] == 2.0
        assert list(answer.errors) == [bad] and "not a query answer" in answer.errors[bad]
        assert reason in answer.errors[bad]
        top = client.top("view", 1, at_ns=HOUR)
        assert not top.complete and "not a query answer" in top.errors[bad]


FIGURES = st.one_of(
    st.integers(0, 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["null", "é", ""])
)
ANSWERS = st.dictionaries(
    st.sampled_from(["k", "min_score", "store", "entities", "signals", "error"]),
    st.one_of(
        st.none(), FIGURES, st.lists(st.lists(FIGURES, max_size=2), max_size=4), st.dictionaries(st.text(), FIGURES)
    ),
)


@settings(max_examples=300, deadline=None)
@given(ANSWERS, st.sampled_from([math.inf, -math.inf, math.nan]), st.booleans())
def test_answers_are_strict_json_of_their_values_and_a_non_finite_figure_is_refused(
    answer: dict[str, Any], bad: float, nested: bool
) -> None:
    """The query API's encoding (msgspec, json where msgspec would write a non-finite figure
    as null): every answer reads back as itself, floats exactly, strings holding "null"
    included; one non-finite figure anywhere is a ValueError, never a null."""
    assert json.loads(api_encode(answer)) == answer
    spoiled = {**answer, "entities": [[1, bad]]} if nested else {**answer, "min_score": bad}
    with pytest.raises(ValueError, match="not JSON compliant"):
        api_encode(spoiled)


class _Overflowing(QueryApi):
    """A store whose sum overflowed (none can: weights are clamped; the encoder's guard)."""

    def get(self, target: str) -> tuple[int, dict[str, Any]]:
        status, answer = super().get(target)
        return status, {**answer, "entities": [[1, math.inf]]}


def test_a_non_finite_figure_is_an_http_500_with_the_reason_and_an_incomplete_group_answer() -> None:
    with stores([[EventRecord(1, 1, 2.0, HOUR)]], _Overflowing) as peers:
        host, port = peers[0].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", f"/v1/top?signal=view&k=5&at={HOUR}")
        response = connection.getresponse()
        assert response.status == 500 and b"not finite" in response.read()
        connection.close()
        with SignalClient(peers) as client:
            answer = client.top("view", 1, at_ns=HOUR)
            assert not answer.complete and "not finite" in answer.errors[peers[0]]


class MarksOnly:
    """The two adapter calls GroupWals makes, scripted."""

    def __init__(self) -> None:
        self.known: list[int] = []
        self.commits: dict[tuple[str, int], tuple[int, str] | None] = {}
        self.down = False

    def partitions(self, _topic: str, _timeout_s: float) -> list[int]:
        return list(self.known)

    def committed(
        self, partitions: list[tuple[str, int]], _timeout_s: float | None = None
    ) -> dict[tuple[str, int], tuple[int, str] | None]:
        if self.down:
            raise KafkaUnavailable("broker down")
        return {p: self.commits.get(p) for p in partitions}


def test_the_group_view_names_every_wal_of_the_marks_and_never_settles_on_an_unknown_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("consumer.serving.group.time.monotonic", lambda: clock[0])
    client = MarksOnly()
    group = GroupWals("me", ["signals"])
    group.refresh_if_due(client)  # the client knows no partitions yet: tried again soon, not in REFRESH_S
    assert group.current == {"me", UNREAD}  # nothing read yet: no answer can be complete
    client.known = [0, 1]
    client.commits = {
        ("signals", 0): (5, encode_mark(CommitMark("a", 3, 0, 7, frozenset({"b"})))),
        ("signals", 1): None,
    }
    clock[0] += 0.5
    group.refresh_if_due(client)
    assert group.current == {"me", "a", "b"}
    client.down = True
    clock[0] += 10
    group.refresh_if_due(client)  # an outage keeps the last view
    assert group.current == {"me", "a", "b"}
    client.down = False
    client.commits[("signals", 1)] = (9, encode_mark(CommitMark("c", 1, 0, 9)))
    clock[0] += 5
    group.refresh_if_due(client)  # backing off after the outage
    assert "c" not in group.current
    clock[0] += 5
    group.refresh_if_due(client)
    assert group.current == {"me", "a", "b", "c"}
    client.down = True
    for _ in range(4):  # a long outage: the view goes stale and says so
        clock[0] += 10
        group.refresh_if_due(client)
    assert group.current == {"me", "a", "b", "c", UNREAD}
