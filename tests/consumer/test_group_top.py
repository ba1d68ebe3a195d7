"""The group top-k's plan (consumer.serving.group_top), against the naive group ranking."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.serving.answers import ranked
from consumer.serving.group_top import TopPlan

SCORES = st.one_of(st.sampled_from([1.0, 2.0, -1.0, 0.5]), st.floats(-10, 10, allow_nan=False, width=16))
PLACEMENTS = st.lists(st.dictionaries(st.integers(0, 30), SCORES, max_size=25), min_size=2, max_size=4)


def store_order(scores: dict[int, float]) -> list[list[float]]:
    """A store's whole ranking as its API lists it: highest first, ties by lower entity id."""
    return [[entity, score] for entity, score in ranked(scores, len(scores))]


def plan_for(placed: list[dict[int, float]], k: int, depth: int) -> tuple[TopPlan, dict[int, float], set[str]]:
    """The plan, the candidates' totals from asking the stores it names, and those stores."""
    full = {f"peer{n}": scores for n, scores in enumerate(placed)}
    plan = TopPlan({peer: store_order(scores)[:depth] for peer, scores in full.items()}, depth, k)
    peers, wanted = plan.asks()
    asked = {peer: {entity: full[peer][entity] for entity in wanted if entity in full[peer]} for peer in peers}
    return plan, plan.totals(asked, wanted), peers


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
    truth: dict[int, float] = {}
    for scores in placed:
        for entity, score in scores.items():
            truth[entity] = truth.get(entity, 0.0) + score
    for entity, total in totals.items():
        assert math.isclose(total, truth[entity], rel_tol=1e-9, abs_tol=1e-9)
    if len(totals) >= k and plan.settled(ranked(totals, k)[-1][1]):
        assert [entity for entity, _ in ranked(totals, k)] == [entity for entity, _ in ranked(truth, k)]


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
    assert plan.settled(66.0)


def test_an_entity_each_store_holds_alone_is_asked_of_the_others_once() -> None:
    """Disjoint stores (producers keying by entity, partitions not moved): each candidate is
    asked of the stores that did not list it, in one round trip, and the answer settles.
    Entity 7 cannot reach the 2nd total (7 + 0.5 + 0.2 < 8): not even asked for."""
    placed = [{1: 9.0, 2: 1.0, 3: 0.5}, {4: 8.0, 5: 1.0, 6: 0.2}, {7: 7.0, 8: 1.0, 9: 0.1}]
    plan, totals, peers = plan_for(placed, 2, 3)
    assert peers == {"peer0", "peer1", "peer2"} and set(totals) == {1, 4}
    assert ranked(totals, 2) == [(1, 9.0), (4, 8.0)] and plan.settled(8.0)


def test_ties_at_the_kth_total_with_an_unseen_lower_id_do_not_settle() -> None:
    """Flat scores: an entity in no list could tie the k-th total and outrank it by its lower
    id, so the plan does not settle (the client goes on to TPUT's threshold step)."""
    placed = [{10: 1.0, 11: 1.0, 0: 1.0}, {20: 1.0, 21: 1.0, 1: 1.0}]
    plan, totals, _ = plan_for(placed, 1, 2)
    assert not plan.settled(ranked(totals, 1)[-1][1])


def test_the_entity_whose_sum_is_the_guess_is_always_a_candidate() -> None:
    """Found by the merge test: one store lists both entities, the others nothing. The
    top entity's highest possible total must not round below its own listed sum (the old
    sum of every bound less the listing store's came out one ulp short, no candidate was
    left, and the group's top 1 answered empty)."""
    plan = TopPlan({"a": [], "b": [[1, 0.9438743126816935], [0, 0.8908987181403393]], "c": []}, 2, 1)
    assert plan.candidates == {1}
    assert plan.asks() == (set(), set())
    totals = plan.totals({}, set())
    assert totals == {1: 0.9438743126816935} and plan.settled(totals[1])
