"""The group top-k's first two steps: which entities' totals to ask for after every store's
deep list, and whether the k highest of those totals are then certainly the answer. Pure.

An entity's group score is the sum of its stores' scores (of any sign; a store without it
counts 0). Each store first lists its own ``depth`` highest ([entity, score], highest
first; ``depth`` a few times k). From those lists alone:

- an entity a store did not list scores at most that store's ``bound`` there: its last
  listed score, or 0 if higher (absent counts 0); a store that listed fewer than ``depth``
  holds no other entity, so 0;
- an entity's highest possible total: its listed scores plus the bounds of the stores that did
  not list it; an entity listed nowhere totals at most the sum of the bounds;
- the *candidates* are the listed entities whose highest possible total reaches ``guess``, the k-th
  highest of the listed entities' listed sums (for scores >= 0 a lower bound of the k-th
  total; for any scores only a guess: the certificate below does not rely on it).

With ``homes`` (the group's placement, consumer.protocol.placement), an entity scores 0
outside the stores holding its partition: only those stores' bounds count in its highest
possible total, and an entity listed nowhere totals at most the heaviest partition's
holders' bounds added (``Homes.widest``).

The candidates' exact totals need each of their homes that did not list one to be asked
for it (``asks``); none, when every candidate was listed by every store with more than it
listed. With those totals, the k-th highest total settles the answer when every entity
outside the candidates, listed or not, is certainly below it (``settled``): then two round
trips (or one) are the whole group top-k. Where each partition is in one store, "below" is
the answer's own order (score, then lower id): an entity a store did not list ranks after
its last listed one, so ties at the k-th score settle too. Otherwise the client goes on as
TPUT does (consumer.serving.client).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Any

from consumer.protocol.placement import Homes
from consumer.serving.answers import beyond
from walcore.storage.store import top_order

DEPTH_FACTOR = 2  # a store's list is this many times k long (one round trip, a few more entries)


def depth(k: int, stores: int, apart: bool, most: int) -> int:
    """How long a list to ask each of ``stores`` for, for a group top ``k`` (at most
    ``most``). ``apart``: the group's placement, last seen, put each partition in one store
    (Homes.most_homes() == 1); then every entity's score is whole in its one store, the
    group top k is among the stores' own top k, and a (k+1)-th entry bounds the rest of its
    store below them: k + 1 settles it in one round trip (unless it ties the k-th) with
    half the entries to read, send and plan of DEPTH_FACTOR·k. One store: its own k."""
    if stores == 1:
        return k
    return min(most, k + 1 if apart else DEPTH_FACTOR * k)


class TopPlan:
    def __init__(
        self, lists: Mapping[str, Sequence[Sequence[Any]]], depth: int, k: int, homes: Homes | None = None
    ) -> None:
        """``lists``: each store's (peer's) first ``depth`` (entity, score), highest first: an
        int and a float each (the client reads peers' answers to that shape:
        consumer.serving.shapes). ``homes``: where the group's events are placed
        (consumer.protocol.placement), if it is known: an entity's score is then 0 outside its
        homes, and they alone bound it."""
        self._listed: dict[int, dict[str, float]] = {}
        for peer, found in lists.items():
            for entity, score in found:
                self._listed.setdefault(entity, {})[peer] = score
        self._full = {peer for peer, found in lists.items() if len(found) >= depth}
        # Each full store's last listed (entity, score): every entity it did not list scores
        # at most that there (``_bounds``: or 0, if higher; a short list holds them all).
        self._lasts: dict[str, tuple[int, float]] = {peer: tuple(lists[peer][-1]) for peer in self._full}
        self._bounds = {peer: max(self._lasts[peer][1], 0.0) if peer in self._full else 0.0 for peer in lists}
        # Each partition in one store: an entity's score there is its whole total, and one a
        # full store did not list ranks after its last listed entry in the answer's own order
        # (score, then lower id), ties included: no rounding margin is needed against it.
        self.apart = homes is not None and homes.most_homes() == 1
        sums = {entity: math.fsum(scores.values()) for entity, scores in self._listed.items()}
        if homes is None:
            self._homes = dict.fromkeys(self._listed, frozenset(lists))
        elif self.apart:
            # A store's placement record covers every event it holds, read in the view its
            # list was (consumer.serving.reader): the one store holding a listed entity's
            # partition is the store that listed it. No hash to compute.
            self._homes = {entity: frozenset(scores) for entity, scores in self._listed.items()}
        else:
            self._homes = homes.of(self._listed)
        self._unlisted = homes.widest(self._bounds) if homes is not None else math.fsum(self._bounds.values())
        guess = heapq.nlargest(k, sums.values())[-1] if len(sums) >= k else -math.inf
        # The highest total each listed entity can have: its listed scores, and the bounds
        # of its other homes, summed in one fsum. (Not the sum of every bound less the
        # listing stores' bounds: that rounds, and an upper one ulp below the entity's own
        # listed sum dropped the guess's own entity from the candidates.)
        if self.apart:  # every home of an entity listed it: its listed sum
            self._uppers = sums
        else:
            self._uppers = {}
            for entity, scores in self._listed.items():
                home = self._homes[entity]
                if not scores.keys() <= home:  # a store that listed it is a home of it, whatever placement says
                    home = self._homes[entity] = home | scores.keys()
                if len(home) == len(scores):  # every home listed it
                    self._uppers[entity] = sums[entity]
                else:
                    others = [self._bounds[peer] for peer in home if peer not in scores]
                    self._uppers[entity] = math.fsum([*scores.values(), *others])
        self.candidates = {entity for entity, upper in self._uppers.items() if upper >= guess}

    def asks(self) -> tuple[set[str], set[int]]:
        """The stores to ask and the candidates to ask them for: every candidate some home of
        it with a full list did not list (each store asked answers for all of them)."""
        if self.apart:  # each entity's one home listed it: every total is known
            return set(), set()
        unlisted_in = {
            entity: (self._full & self._homes[entity]) - self._listed[entity].keys() for entity in self.candidates
        }
        wanted = {entity for entity, stores in unlisted_in.items() if stores}
        return set().union(*(unlisted_in[entity] for entity in wanted)), wanted

    def totals(self, asked: Mapping[str, Mapping[int, float]], wanted: set[int]) -> dict[int, float]:
        """The candidates' exact totals: for an entity in ``wanted``, each asked store's
        answer (absent: 0); otherwise, and from the stores not asked, the listed scores (a
        store with a short list that did not list it: 0)."""
        found = {}
        for entity in self.candidates:
            listed = self._listed[entity]
            if entity in wanted:
                terms = [answer.get(entity, 0.0) for answer in asked.values()]
                terms += [score for peer, score in listed.items() if peer not in asked]
            else:
                terms = list(listed.values())
            found[entity] = math.fsum(terms)
        return found

    def settled(self, kth: tuple[int, float]) -> bool:
        """Whether every entity outside the candidates ranks certainly below ``kth``, the
        k-th (entity, total) of the candidates' totals: none can reach it, nor tie it with a
        lower id. Where the entities involved are whole in one store (``apart``), exactly
        in the answer's order; otherwise below its total by more than sums round."""
        entity, floor = kth
        exact = self.apart and len(self._homes.get(entity, ())) == 1
        for other, upper in self._uppers.items():
            if other in self.candidates:
                continue
            whole = exact and len(self._homes[other]) == 1  # its upper is its listed score, its total
            if whole and upper < floor:  # after it whatever the ids (the usual case: one compare)
                continue
            if not (_ranks_after((other, upper), kth) if whole else beyond(floor, upper)):
                return False
        if exact:
            return all(last == kth or _ranks_after(last, kth) for last in self._lasts.values())
        return beyond(floor, self._unlisted)


def _ranks_after(one: tuple[int, float], other: tuple[int, float]) -> bool:
    """Whether (entity, total) ``one`` comes after ``other`` in a top-k's order."""
    return top_order(one) > top_order(other)
