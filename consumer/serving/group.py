"""Which WALs the group has committed from: the stores a whole-group answer needs.

Every offset commit's mark lists every WAL that has committed its partition
(consumer.protocol.handoff), so the union over the marks of every partition of the input topics
names every store that may hold some entity's events. The service refreshes it from the
group's committed offsets every ``REFRESH_S`` (one offset fetch; on its own thread, since
the Kafka clients are not thread-safe) and each query answer carries it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from consumer.errors import KafkaUnavailable
from consumer.kafka.adapter import KafkaAdapter, Partition
from consumer.protocol.handoff import decode_mark

log = logging.getLogger(__name__)

REFRESH_S = 5.0
# The service's loop waits for the read: in a broker outage it gives up after this long and
# tries again only after OUTAGE_BACKOFF_S (a stalled loop would fail /healthz).
READ_TIMEOUT_S = 1.0
OUTAGE_BACKOFF_S = 10.0
UNKNOWN_RETRY_S = 0.2
# A view older than this (or none yet) may miss a WAL that committed since: it then names a
# WAL no store answers for, so that no group answer calls itself complete on it.
STALE_AFTER_S = 30.0
UNREAD = "(the group's commit marks not read for a while)"


def wals_of(commits: Mapping[Partition, tuple[int, str] | None]) -> frozenset[str]:
    """Every WAL the commit marks of ``commits`` name."""
    marks = [decode_mark(commit[1]) for commit in commits.values() if commit is not None]
    return frozenset(wal for mark in marks if mark is not None for wal in mark.wals)


class GroupWals:
    def __init__(self, own: str, topics: Sequence[str]) -> None:
        self._own = own
        self._topics = topics
        self._read: frozenset[str] = frozenset()
        self._read_at = float("-inf")
        self._next_at = float("-inf")

    @property
    def current(self) -> frozenset[str]:
        """The WALs the group has committed from, as last read; with UNREAD among them when
        that read is older than STALE_AFTER_S (or there was none yet)."""
        stale = time.monotonic() - self._read_at > STALE_AFTER_S
        return self._read | {self._own} | ({UNREAD} if stale else set())

    def refresh_if_due(self, client: KafkaAdapter) -> None:
        """On the service thread: read every input partition's commit mark again, every
        REFRESH_S. A broker outage keeps the last view (logged at debug: the loop says it
        already; after STALE_AFTER_S answers stop calling themselves complete) and waits
        OUTAGE_BACKOFF_S before the next try (each try may hold the loop READ_TIMEOUT_S)."""
        now = time.monotonic()
        if now < self._next_at:
            return
        self._next_at = now + REFRESH_S
        try:
            found = {topic: client.partitions(topic, READ_TIMEOUT_S) for topic in self._topics}
            if not all(found.values()):  # the client does not know a topic's partitions yet
                self._next_at = now + UNKNOWN_RETRY_S
                return
            partitions = [(topic, number) for topic, numbers in found.items() for number in numbers]
            self._read = wals_of(client.committed(partitions, READ_TIMEOUT_S))
            self._read_at = now
        except KafkaUnavailable as exc:
            self._next_at = now + OUTAGE_BACKOFF_S
            log.debug("the group's commit marks could not be read (%s); the last view stays", exc)
