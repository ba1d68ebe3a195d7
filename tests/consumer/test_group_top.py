"""The group top-k's plan (consumer.serving.group_top), against the naive group ranking."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.kafka.partitioning import entity_key_hashes
from consumer.protocol.placement import Homes, observe
from consumer.serving.answers import ranked
from consumer.serving.group_top import DEPTH_FACTOR, TopPlan, depth

SCORES = st.one_of(st.sampled_from([1.0, 2.0, -1.0, 0.5]), st.floats(-10, 10, allow_nan=False, width=16))
PLACEMENTS = st.lists(st.dictionaries(st.integers(0, 30), SCORES, max_size=25), min_size=2, max_size=4)


def store_order(scores: dict[int, float]) -> list[list[float]]:
    """A store's whole ranking as its API lists it: highest first, ties by lower entity id."""
    return [[entity, score] for entity, score in ranked(scores, len(scores))]


def plan_for(
    placed: list[dict[int, float]], k: int, depth: int, homes: Homes | None = None
) -> tuple[TopPlan, dict[int, float], set[str]]:
    """The plan, the candidates' totals from asking the stores it names, and those stores."""
    full = {f"peer{n}": scores for n, scores in enumerate(placed)}
    plan = TopPlan({peer: store_order(scores)[:depth] for peer, scores in full.items()}, depth, k, homes)
    peers, wanted = plan.asks()
    asked = {peer: {entity: full[peer][entity] for entity in wanted if entity in full[peer]} for peer in peers}
    return plan, plan.totals(asked, wanted), peers


def assert_true_to(placed: list[dict[int, float]], plan: TopPlan, totals: dict[int, float], k: int) -> None:
    """Every candidate's total is its sum over the stores, and when the plan says the k-th
    total settles it, the k highest totals are the group's top k exactly."""
    truth: dict[int, float] = {}
    for scores in placed:
        for entity, score in scores.items():
            truth[entity] = truth.get(entity, 0.0) + score
    for entity, total in totals.items():
        assert math.isclose(total, truth[entity], rel_tol=1e-9, abs_tol=1e-9)
    if len(totals) >= k and plan.settled(ranked(totals, k)[-1]):
        assert [entity for entity, _ in ranked(totals, k)] == [entity for entity, _ in ranked(truth, k)]


@settings(max_examples=400, deadline=None)
@given(PLACEMENTS, st.integers(1, 6), st.integers(1, 3))
def test_settled_answers_are_the_naive_group_top_k_and_candidate_totals_are_exact(
    placed: list[dict[int, float]], k: int, factor: int
) -> None:
    """Any scores (negative, zero, ties), any overlap of the stores' entities, lists as long
    as k or longer: every candidate's total is its sum over the stores, and when the plan
    says the k-th total settles it, the k highest totals are the group's top k exactly."""
    plan, totals, _ = plan_for(placed, k, factor * k)
    listed = {entity for scores in placed for entity, _ in store_order(scores)[: factor * k]}
    assert len(plan.candidates) >= min(k, len(listed))
    assert_true_to(placed, plan, totals, k)


def test_entities_every_store_listed_need_no_second_round_trip() -> None:
    """Skewed scores where the popular entities are in every store (batches dealt round
    robin): every candidate was listed by every store, so nothing is asked and the deep
    lists' bound settles the answer."""
    placed = [
        {1: 50.0, 2: 20.0, 3: 1.0, 4: 0.5},
        {1: 40.0, 2: 25.0, 5: 1.0, 6: 0.4},
        {1: 30.0, 2: 21.0, 7: 2.0, 8: 0.3},
    ]
    plan, totals, peers = plan_for(placed, 2, 4)
    assert not peers and ranked(totals, 2) == [(1, 120.0), (2, 66.0)]
    assert plan.settled(ranked(totals, 2)[-1])


def test_an_entity_each_store_holds_alone_is_asked_of_the_others_once() -> None:
    """Disjoint stores (producers keying by entity, partitions not moved): each candidate is
    asked of the stores that did not list it, in one round trip, and the answer settles.
    Entity 7 cannot reach the 2nd total (7 + 0.5 + 0.2 < 8): not even asked for."""
    placed = [{1: 9.0, 2: 1.0, 3: 0.5}, {4: 8.0, 5: 1.0, 6: 0.2}, {7: 7.0, 8: 1.0, 9: 0.1}]
    plan, totals, peers = plan_for(placed, 2, 3)
    assert peers == {"peer0", "peer1", "peer2"} and set(totals) == {1, 4}
    assert ranked(totals, 2) == [(1, 9.0), (4, 8.0)] and plan.settled(ranked(totals, 2)[-1])


def test_ties_at_the_kth_total_with_an_unseen_lower_id_do_not_settle() -> None:
    """Flat scores: an entity in no list could tie the k-th total and outrank it by its lower
    id, so the plan does not settle (the client goes on to TPUT's threshold step)."""
    placed = [{10: 1.0, 11: 1.0, 0: 1.0}, {20: 1.0, 21: 1.0, 1: 1.0}]
    plan, totals, _ = plan_for(placed, 1, 2)
    assert not plan.settled(ranked(totals, 1)[-1])


def test_the_entity_whose_sum_is_the_guess_is_always_a_candidate() -> None:
    """Found by the merge test: one store lists both entities, the others nothing. The
    top entity's highest possible total must not round below its own listed sum (the old
    sum of every bound less the listing store's came out one ulp short, no candidate was
    left, and the group's top 1 answered empty)."""
    plan = TopPlan({"a": [], "b": [[1, 0.9438743126816935], [0, 0.8908987181403393]], "c": []}, 2, 1)
    assert plan.candidates == {1}
    assert plan.asks() == (set(), set())
    totals = plan.totals({}, set())
    assert totals == {1: 0.9438743126816935} and plan.settled((1, totals[1]))


def keyed(
    scores: dict[int, list[float | None]], holders: list[set[int]], modulus: int
) -> tuple[list[dict[int, float]], Homes]:
    """Three stores holding each entity's events in the stores holding its key's partition
    (``holders[p]``; ``scores[e][n]``: its score in store n, None: no event there), and the
    placement their records give (each store's events observed as the applier observes them)."""
    placed: list[dict[int, float]] = [{}, {}, {}]
    runs: list[list[tuple[str, int, int]]] = [[], [], []]
    entities: list[list[int]] = [[], [], []]
    for entity, per_store in scores.items():
        partition = int(entity_key_hashes(np.array([entity], np.uint64))[0]) % modulus
        for n in holders[partition]:
            score = per_store[n]
            if score is not None:
                placed[n][entity] = score
                runs[n].append(("signals", partition, 1))
                entities[n].append(entity)
    held = {f"peer{n}": observe({}, runs[n], np.array(entities[n], np.uint64)) for n in range(3)}
    homes = Homes.of_answers(held)
    assert homes is not None  # keyed events: the gcd of a partition's gaps is a multiple of the modulus
    return placed, homes


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(st.sets(st.integers(0, 2), min_size=1), min_size=6, max_size=6),
    st.dictionaries(st.integers(0, 60), st.lists(st.one_of(st.none(), SCORES), min_size=3, max_size=3)),
    st.integers(1, 6),
    st.integers(1, 3),
)
def test_with_placement_settled_answers_are_still_the_naive_group_top_k(
    modulus: int, holders: list[set[int]], scores: dict[int, list[float | None]], k: int, factor: int
) -> None:
    """Keyed events, partitions held by one store or moved between several: with the
    placement the stores' records give, candidate totals are exact, a settled answer is the
    naive top k, and a candidate is asked only of stores that hold its partition."""
    placed, homes = keyed(scores, holders, modulus)
    plan, totals, peers = plan_for(placed, k, factor * k, homes)
    assert_true_to(placed, plan, totals, k)
    wanted = plan.asks()[1]
    assert peers <= set().union(*homes.of(wanted).values())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.lists(st.integers(0, 2**64 - 1), max_size=40))
def test_homes_found_through_a_kept_memo_of_key_hashes_are_the_hashed_ones(first: list[int], then: list[int]) -> None:
    """A client keeps its entities' key hashes across queries (Homes.of_answers' ``hashes``):
    the second query's homes, partly from the memo, are those of a fresh hashing."""
    held = {
        f"peer{n}": {"signals": {p: 12 for p in range(12) if p % 3 == n or p == 7}} for n in range(3)
    }  # partition 7 in every store
    memo: dict[int, int] = {}
    for entities in (first, then):
        homes = Homes.of_answers(held, memo)
        assert homes is not None
        assert homes.of(entities) == Homes.of_answers(held).of(entities)  # type: ignore[union-attr]
    assert set(memo) == {*first, *then}


def test_placement_settles_a_keyed_group_in_one_round_trip() -> None:
    """Each store holds its own partitions (nothing moved): an entity's score elsewhere is 0,
    so the deep lists alone are the answer. Without placement the same lists need the two
    leaders asked of the other stores."""
    entities = {e: int(entity_key_hashes(np.array([e], np.uint64))[0]) % 3 for e in range(30)}
    scores = {e: [10.0 - e / 10 if n == p else None for n in range(3)] for e, p in entities.items()}
    placed, homes = keyed(scores, [{0}, {1}, {2}], 3)  # type: ignore[arg-type]
    plan, totals, peers = plan_for(placed, 2, 4, homes)
    assert not peers and plan.settled(ranked(totals, 2)[-1])
    assert ranked(totals, 2) == [(0, 10.0), (1, 9.9)]
    _, _, asked = plan_for(placed, 2, 4)
    assert asked


def test_one_event_off_its_keys_partition_and_nothing_is_placed() -> None:
    """A producer keying by something else, once: the gcd of that partition's gaps drops to
    where no modulus fits, and the group places nothing (every store a home again)."""
    hashes = entity_key_hashes(np.array([1, 2, 3], np.uint64)).tolist()
    right = observe({}, [("signals", hashes[0] % 4, 1), ("signals", hashes[1] % 4, 1)], np.array([1, 2], np.uint64))
    assert Homes.of_answers({"a": right}) is not None
    wrong = (hashes[2] + 1) % 4
    off = observe(right, [("signals", wrong, 1)], np.array([3], np.uint64))
    assert Homes.of_answers({"a": right, "b": off}) is None
    assert Homes.of_answers({"a": right, "b": None}) is None  # a store that does not know
    assert observe({}, [("", 0, 1)], np.array([3], np.uint64)) is None  # an event without a source


def test_an_entity_of_a_moved_partition_is_bounded_by_every_store_that_held_it() -> None:
    """One partition, consumed by two stores in turn: entity 9, listed by neither, holds
    0.65 in each (1.3 in all) above the listed leader's 1.0. The unlisted bound must add
    both stores' bounds (0.7 + 0.7), not take the larger, or the plan settles on entity 1."""
    scores: dict[int, list[float | None]] = {
        1: [1.0, None, None],
        2: [0.7, None, None],
        3: [None, 0.9, None],
        4: [None, 0.7, None],
        9: [0.65, 0.65, None],
    }
    placed, homes = keyed(scores, [{0, 1}], 1)
    plan, totals, _ = plan_for(placed, 1, 2, homes)
    assert not plan.settled(ranked(totals, 1)[-1])


def test_lists_are_k_plus_one_long_only_where_the_last_placement_put_each_partition_in_one_store() -> None:
    assert depth(100, 3, apart=False, most=10_000) == DEPTH_FACTOR * 100
    assert depth(100, 3, apart=True, most=10_000) == 101
    assert depth(100, 1, apart=False, most=10_000) == 100  # one store's own top k is exact
    assert depth(9_000, 3, apart=False, most=10_000) == 10_000


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(st.integers(0, 2), min_size=6, max_size=6),
    st.dictionaries(st.integers(0, 60), st.lists(st.one_of(st.none(), SCORES), min_size=3, max_size=3)),
    st.integers(1, 6),
    st.integers(0, 2),
)
def test_each_partition_in_one_store_settles_on_the_naive_top_k_ties_included(
    modulus: int, holder: list[int], scores: dict[int, list[float | None]], k: int, extra: int
) -> None:
    """Nothing moved: every entity whole in one store, and lists of k + 1 (or up to 2 more,
    as the client asks once it has seen that). Settling is then decided in the answer's own
    order (ties by lower id, no rounding margin): with many equal scores, a settled answer
    must still be the naive top k, entity by entity."""
    placed, homes = keyed(scores, [{n} for n in holder], modulus)
    assert homes.most_homes() == 1 or not any(placed)
    plan, totals, peers = plan_for(placed, k, k + 1 + extra, homes)
    assert not peers  # whole entities: nobody is asked for a score
    assert_true_to(placed, plan, totals, k)


def test_a_tie_at_the_kth_score_settles_by_id_when_the_lists_show_it() -> None:
    """Each entity in one store, every score 5.0 (flat traffic: the k-th total ties
    hundreds). With numbers alone nothing could settle it (an unlisted 5.0 might reach the
    k-th); in the answer's order an entity a store did not list has a higher id than its
    last listed one. Top 2 from lists of 1: the store that listed the lowest id may hold the
    second lowest too, so not settled; from lists of 2, settled, on the naive answer."""
    stores: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for entity in range(40):
        stores[int(entity_key_hashes(np.array([entity], np.uint64))[0]) % 3].append(entity)
    scores: dict[int, list[float | None]] = {
        entity: [5.0 if m == n else None for m in range(3)] for n, held in stores.items() for entity in held[:5]
    }
    placed, homes = keyed(scores, [{0}, {1}, {2}], 3)
    plan, totals, _ = plan_for(placed, 2, 1, homes)
    assert not plan.settled(ranked(totals, 2)[-1])
    plan, totals, _ = plan_for(placed, 2, 2, homes)
    assert plan.settled(ranked(totals, 2)[-1])
    assert [entity for entity, _ in ranked(totals, 2)] == sorted(scores)[:2]  # the two lowest ids
    assert_true_to(placed, plan, totals, 2)
