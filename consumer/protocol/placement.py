"""Which stores can hold an entity's events: what lets a group top-k leave most stores out
of most entities' totals. Pure: values in, values out.

Kafka's default partitioner puts a message keyed K in partition murmur2(K) mod N (N: the
topic's partition count), and DurableProducer keys each event by its entity id in decimal.
When every event sits in the partition its entity's key hash gives, all of an entity's
events of a topic are in one partition, and only the stores whose WALs consumed that
partition can hold any of them: in every other store its score is exactly 0.

Nothing is assumed of producers: it is checked, event by event. Each store records, per
source partition p it applied events of, ``G_p``: the gcd of |hash(entity) - p| over those
events (0 while every hash equals p). A modulus N divides every G_p and exceeds every p
exactly when hash mod N == p for every event, whatever N the producers used; the client
takes the gcd of every store's G_p of a topic as N (``Homes.of_answers``). An event off its
key's partition (a producer keying by anything else, a custom partitioner, a topic whose
partition count grew) brings that gcd down to where no N fits: the topic then places
nothing, and every store stays a possible home of every entity, as without placement.

A store that applied events before it recorded placement (an older version's), or events
without a source, records ``null``: it places nothing either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.kafka.partitioning import entity_key_hashes
from walcore.records import SourcePosition

# topic -> source partition -> G (the gcd above); None: not known (see the module's doc)
Held = dict[str, dict[int, int]]


def observe(held: Held | None, runs: Sequence[tuple[str, int, int]], entities: npt.NDArray[np.uint64]) -> Held | None:
    """``held`` with a batch's events added: ``runs`` are (topic, partition, count) in order,
    covering ``entities`` (a topic of "" marks events without a source: nothing is known)."""
    if held is None or any(not topic for topic, _, count in runs if count):
        return None
    if sum(count for _, _, count in runs) != len(entities):
        raise ValueError(f"source runs cover {sum(count for _, _, count in runs)} events, not {len(entities)}")
    hashes = entity_key_hashes(entities)
    found = {topic: dict(partitions) for topic, partitions in held.items()}
    start = 0
    for topic, partition, count in runs:
        if count:
            gap = int(np.gcd.reduce(np.abs(hashes[start : start + count] - partition)))
            partitions = found.setdefault(topic, {})
            partitions[partition] = math.gcd(partitions.get(partition, 0), gap)
        start += count
    return found


def runs_of(sources: Iterable[SourcePosition | None]) -> list[tuple[str, int, int]]:
    """The (topic, partition, count) runs of events' sources, in order (topic "": none)."""
    runs: list[tuple[str, int, int]] = []
    for source in sources:
        topic, partition = (source.topic, source.partition) if source is not None else ("", 0)
        if runs and runs[-1][:2] == (topic, partition):
            runs[-1] = (topic, partition, runs[-1][2] + 1)
        else:
            runs.append((topic, partition, 1))
    return runs


def to_json(held: Held | None) -> dict[str, dict[str, int]] | None:
    """As the query API answers it (``as_held`` reads it back)."""
    if held is None:
        return None
    return {topic: {str(p): g for p, g in sorted(partitions.items())} for topic, partitions in sorted(held.items())}


def encode(held: Held | None) -> bytes:
    """As the store records it (``decode`` reads it back)."""
    return json.dumps(to_json(held), separators=(",", ":")).encode()


def decode(raw: bytes | None, applied_seq: int) -> Held | None:
    """A store's record (None: none yet, which is ``{}`` for a store that applied nothing)."""
    if raw is None:
        return {} if applied_seq == 0 else None
    return as_held(json.loads(raw))


def as_held(value: Any) -> Held | None:
    """A placement as JSON carries it (partition numbers as strings) back to ``Held``; None
    for anything else (a peer's answer is read, not trusted: a malformed record places
    nothing)."""
    try:
        held = {str(topic): {int(p): g for p, g in partitions.items()} for topic, partitions in value.items()}
    except (AttributeError, TypeError, ValueError):
        return None
    if any(type(g) is not int or p < 0 or g < 0 for partitions in held.values() for p, g in partitions.items()):
        return None
    return held


class Homes:
    """For each topic the group places: its modulus N and, per partition, the stores (peers)
    holding events of it."""

    def __init__(
        self, topics: Mapping[str, tuple[int, Mapping[int, frozenset[str]]]], hashes: dict[int, int] | None = None
    ) -> None:
        """``hashes``: entity -> its key's hash, as ``of`` computed them, kept by the caller
        across calls (a client asking for the same top lists again hashes only new entities:
        hashing a few hundred ids in numpy costs ~0.4 ms, finding them ~0.05)."""
        self._topics = topics
        self._hashes = {} if hashes is None else hashes

    @classmethod
    def of_answers(cls, held: Mapping[str, Held | None], hashes: dict[int, int] | None = None) -> Homes | None:
        """From every answering store's record (peer -> held); None when some topic places
        nothing, or some store's record is not known."""
        if any(record is None for record in held.values()):
            return None
        topics: dict[str, tuple[int, dict[int, frozenset[str]]]] = {}
        for topic in sorted({topic for record in held.values() for topic in record or {}}):
            partitions: dict[int, set[str]] = {}
            modulus = 0
            for peer, record in held.items():
                for partition, gap in (record or {}).get(topic, {}).items():
                    partitions.setdefault(partition, set()).add(peer)
                    modulus = math.gcd(modulus, gap)
            if modulus == 0:  # every hash equal to its partition: any N above them all fits
                modulus = max(partitions) + 1
            if modulus <= max(partitions):
                return None
            topics[topic] = (modulus, {p: frozenset(peers) for p, peers in partitions.items()})
        return cls(topics, hashes)

    def of(self, entities: Iterable[int]) -> dict[int, frozenset[str]]:
        """Each entity's possible homes: the stores holding its partition of some topic."""
        wanted = list(entities)
        known = self._hashes
        new = [entity for entity in wanted if entity not in known]
        if new:
            known.update(zip(new, entity_key_hashes(np.array(new, np.uint64)).tolist()))
        hashes = [known[entity] for entity in wanted]
        nowhere: frozenset[str] = frozenset()
        if len(self._topics) == 1:  # the usual case: one shared set per partition, no unions
            ((modulus, holders),) = self._topics.values()
            return {entity: holders.get(hashed % modulus, nowhere) for entity, hashed in zip(wanted, hashes)}
        return {
            entity: nowhere.union(
                *(holders.get(hashed % modulus, nowhere) for modulus, holders in self._topics.values())
            )
            for entity, hashed in zip(wanted, hashes)
        }

    def widest(self, bounds: Mapping[str, float]) -> float:
        """The most an entity listed by no store can total, given each store's ``bounds``
        (the most an unlisted entity scores there): the heaviest homes of one partition per
        topic, added over the topics; never more than every bound added."""
        per_topic = [
            max(math.fsum(bounds.get(peer, 0.0) for peer in peers) for peers in holders.values())
            for _, holders in self._topics.values()
        ]
        return min(math.fsum(per_topic), math.fsum(bounds.values()))

    def most_homes(self) -> int:
        """The most stores one entity can be in: the widest partition's holders, added over
        the topics."""
        return sum(max(len(peers) for peers in holders.values()) for _, holders in self._topics.values())
