"""``delivery = "transactional"``: one Kafka transaction per offset commit (docs/acks.md).

The first send after a commit begins a transaction; the commit sends the offsets into it
with the group consumer's metadata (``send_offsets_to_transaction``, KIP-447) and commits
it. The broker checks that metadata's generation: an instance that lost its partitions
while paused (SIGSTOP, a frozen VM) still holds the old one, so its commit is refused, the
transaction is aborted, and none of its acks or dead letters ever reaches a
``read_committed`` reader (DurableProducer, a handoff). That ends the service (exit 10):
a rejoin would start from the group's commits anyway, and a restart does it with a clean
producer. The WAL's copies of the aborted batch are orphans, voided by the next
assignment's sweep once their new owner acked them (consumer.ingest.ownership).

A commit may also carry sends of the next batch (the service stages it before the commit
of this one): those become visible a batch early, as acked-but-not-committed, which the
handoff already handles. Every transaction that holds an ack ends with offsets of the
group, so each one's generation is checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer.errors import KafkaUnavailable, TransactionAborted

log = logging.getLogger(__name__)

T = TypeVar("T")

ABORT_TIMEOUT_S = 10.0
INIT_TIMEOUT_S = 10.0  # then KafkaUnavailable: the service retries the connection with backoff


class Transactions:
    def __init__(self, producer: Producer, consumer: Consumer, timeout_s: float) -> None:
        self._producer = producer
        self._consumer = consumer
        self._timeout_s = timeout_s
        self._open = False

    def init(self) -> None:
        """Register the transactional id with the coordinator, fencing (and aborting the
        open transaction of) an earlier process with the same id: the WAL's previous run."""
        self._retrying("starting transactions", self._producer.init_transactions, INIT_TIMEOUT_S)

    def begin(self) -> None:
        """Before a send: open the batch's transaction unless one is open."""
        if not self._open:
            try:
                self._producer.begin_transaction()
            except KafkaException as exc:
                raise TransactionAborted(f"cannot begin a transaction: {_text(exc)}") from exc
            self._open = True

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit ``offsets`` (with their marks) and everything sent since the last commit,
        atomically; TransactionAborted, after aborting, when the broker refuses it."""
        self.begin()
        try:
            self._retrying(
                "sending the offsets",
                lambda timeout: self._producer.send_offsets_to_transaction(
                    offsets, self._consumer.consumer_group_metadata(), timeout
                ),
                self._timeout_s,
            )
            self._retrying("committing the transaction", self._producer.commit_transaction, self._timeout_s)
        except TransactionAborted:
            self.abort()
            raise
        self._open = False

    def abort(self) -> None:
        """Abort the open transaction, if any (best effort: a producer that cannot abort is
        being closed or was fenced; the coordinator aborts the transaction at its timeout)."""
        if not self._open:
            return
        self._open = False
        try:
            self._producer.abort_transaction(ABORT_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("aborting the open transaction failed (%s); the broker aborts it at its timeout", _text(exc))

    def _retrying(self, what: str, call: Callable[[float], T], timeout_s: float) -> T:
        """``call(timeout)`` again while librdkafka calls its error retriable, up to the
        timeout; TransactionAborted when the error needs an abort or is fatal,
        KafkaUnavailable when it stays retriable."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return call(max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is not None and error.retriable() and time.monotonic() < deadline:
                    continue
                if error is not None and error.fatal():
                    raise TransactionAborted(
                        f"transactions stopped while {what} ({_text(exc)}): a fatal producer error; a fenced "
                        "producer means another process runs with this WAL's transactional id (a copy of the WAL?); "
                        "nothing uncommitted is visible"
                    ) from exc
                if error is not None and error.txn_requires_abort():
                    raise TransactionAborted(
                        f"transaction refused while {what} ({_text(exc)}): the group moved on while this instance "
                        "held the batch (was it paused?); none of its acks, dead letters or offsets is visible, "
                        "and its WAL copies are voided at this WAL's next assignment"
                    ) from exc
                if error is not None and error.retriable():
                    raise KafkaUnavailable(f"{what}: still failing after {timeout_s:.0f} s: {_text(exc)}") from exc
                raise TransactionAborted(f"transaction failed while {what}: {_text(exc)}") from exc


def _text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else repr(exc)
