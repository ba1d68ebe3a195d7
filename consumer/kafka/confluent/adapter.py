"""The confluent-kafka (librdkafka) implementation of consumer.kafka.adapter.KafkaAdapter:
``backend = "confluent"``, installed with ``pip install 'tidal-consumer[librdkafka]'``.

Why it keeps the invariants of the kafka-python backend:

* The group uses the eager range/roundrobin assignors (the option is reserved), so
  ``on_revoke`` runs inside ``consume()`` on the service thread while the partitions are
  still owned: the drain (fsync, acks flushed, offsets committed synchronously) finishes
  before they go. On partitions *lost* (session timeout) librdkafka calls ``on_revoke``
  too; the drain's commit is then refused and logged (the records are durable and acked).
* Deliveries and commit results are librdkafka callbacks, served by ``poll``/``consume``
  on the service thread; ``Delivery.done`` serves the producer's queue itself, so a
  batch settles without waiting for the next poll.
* Acks are sent with the murmur2 partitioner, as kafka-python does, so acks of one
  source partition land on one reply partition whichever backend sent them.
* ``close`` detaches the rebalance listener first: librdkafka revokes the assignment
  while closing, and a drain there (after a fatal WAL error, say) must not run.
* With ``delivery = "transactional"`` (consumer.kafka.confluent.transactions) every send
  joins the open transaction and every commit, async or sync, commits it with the
  offsets, synchronously; ``close`` aborts what is still open.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.errors import (
    CommitRefused,
    KafkaOptionInvalid,
    KafkaRefused,
    KafkaUnavailable,
    TransactionAborted,
    WalRunningElsewhere,
)
from consumer.kafka.adapter import (
    HANDOFF_TIMEOUT_S,
    Connection,
    ListenerRelay,
    Partition,
    RebalanceListener,
    Refusals,
)
from consumer.kafka.confluent.calls import MAX_BLOCK_S, consume_ready, produce_waiting
from consumer.kafka.confluent.options import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS
from consumer.kafka.confluent.transactions import Transactions
from consumer.kafka.partitioning import partition_of
from consumer.protocol.types import Commits, Poll

log = logging.getLogger(__name__)

# Errors meaning the group moved on: retrying the commit cannot succeed.
_COMMIT_REFUSED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}
# Errors meaning the broker refuses these credentials or this client.
_REFUSED = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
}
UNREACHABLE_LOG_S = 15.0  # "cannot reach Kafka" at most this often
# librdkafka's own log (every failed connect, at ERROR): shown at TIDAL_KAFKA_LOG_LEVEL
# (consumer.cli), like kafka-python's; the watch logs what the operator needs.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


class _Record(tuple[Any, ...]):
    """A librdkafka Message as the batch core reads it (consumer.protocol.types.PolledRecord):
    ``(offset, value, message)``. The offset and value are read once, when polled (the
    batch core reads them for every record); the rest only for a dead letter."""

    offset = property(itemgetter(0))
    value = property(itemgetter(1))

    @property
    def _message(self) -> Message:
        return cast(Message, self[2])

    @property
    def topic(self) -> str:
        return cast(str, self._message.topic())  # a consumed message names its topic and partition

    @property
    def partition(self) -> int:
        return cast(int, self._message.partition())

    @property
    def key(self) -> bytes | None:
        return self._message.key()

    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None:
        return cast("Sequence[tuple[str, bytes]] | None", self._message.headers())  # as consumed: a list

    @property
    def timestamp(self) -> int:
        return self._message.timestamp()[1]


_new = tuple.__new__


class _Delivery:
    __slots__ = ("_done", "_error", "_position", "_producer")

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._done = False
        self._error: BaseException | None = None
        self._position: tuple[int, int] | None = None

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report (served by the producer's poll/flush)."""
        self._done = True
        if error is not None:
            self._error = KafkaException(error)
        else:
            self._position = cast("tuple[int, int]", (message.partition(), message.offset()))  # delivered: set

    def done(self) -> bool:
        if not self._done:
            self._producer.poll(0)
        return self._done

    def error(self) -> BaseException | None:
        return self._error

    def position(self) -> tuple[int, int] | None:
        return self._position


class _Watch:
    """librdkafka reports client-level errors (rejected credentials, an untrusted
    certificate, a fatal error, no broker reachable) only to ``error_cb`` and retries for
    ever: the service would sit at events/s=0 without a word. The watch logs them (an
    unreachable broker once per UNREACHABLE_LOG_S); ``check`` (from poll) raises."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._unreachable_logged = -UNREACHABLE_LOG_S
        self.refusals = Refusals("sasl.* / ssl.*")
        self.untrusted = False  # the broker's certificate: no retry will change that
        self.fatal: KafkaError | None = None

    def error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = error
            return
        text = error.str()
        untrusted = error.code() == KafkaError._SSL and "certificate verify failed" in text
        if error.code() not in _REFUSED and not untrusted:
            # Transport errors librdkafka retries by itself; "all brokers down" is worth a line.
            if error.code() == KafkaError._ALL_BROKERS_DOWN and (
                time.monotonic() - self._unreachable_logged >= UNREACHABLE_LOG_S
            ):
                self._unreachable_logged = time.monotonic()
                log.warning("cannot reach Kafka at %s (%s); librdkafka keeps retrying", self._bootstrap_servers, text)
            else:
                log.debug("librdkafka: %s", text)
            return
        self.untrusted = self.untrusted or untrusted
        self.refusals.note(text)

    def check(self, grace_s: float) -> None:
        if self.fatal is not None:
            raise _fatal(self.fatal)
        refusals = self.refusals
        if self.untrusted and refusals.ongoing():  # no retry changes an untrusted certificate
            raise KafkaRefused(refusals.reason)
        if refusals.persisted(grace_s):
            raise KafkaRefused(f"{refusals.reason}, for {grace_s:.0f} s")


def _fatal(error: KafkaError) -> BaseException:
    """What a fatal librdkafka error ends the service with. A consumer fenced by another
    with its group.instance.id (tidal-<wal_id>) reaches the application as a generic
    "fatal" code whose text names the broker's error, hence the text match."""
    text = error.str()
    if error.code() == KafkaError.FENCED_INSTANCE_ID or ("fenced" in text and "group.instance.id" in text):
        return WalRunningElsewhere(
            f"another process joined the group as this WAL ({text}): is a copy of this WAL directory running "
            "elsewhere? Two copies would give one (wal_id, seq) to two events: stop one, and give a new "
            "instance a fresh WAL directory"
        )
    return KafkaUnavailable(f"librdkafka fatal error: {text}")


def _metadata(tp: TopicPartition) -> str:
    """A commit's metadata as read; "" when librdkafka read it past its end (a mark written
    without a NUL, by kafka-python before marks carried one: consumer.protocol.handoff.encode_mark)."""
    try:
        return tp.metadata or ""
    except UnicodeDecodeError:
        log.warning(
            "the commit metadata of %s:%d is unreadable (written without a NUL terminator, which librdkafka "
            "reads past); treated as no commit mark until the partition's next commit",
            tp.topic,
            tp.partition,
        )
        return ""


def _topic_partitions(commits: Commits) -> list[TopicPartition]:
    # A commit without metadata leaves the argument out: confluent-kafka refuses None there.
    return [
        TopicPartition(topic, partition, offset, metadata) if metadata else TopicPartition(topic, partition, offset)
        for (topic, partition), (offset, metadata) in commits.items()
    ]


def _raise_partition_errors(partitions: Sequence[TopicPartition] | None) -> None:
    for tp in partitions or ():
        if tp.error is not None:
            raise KafkaException(tp.error)


def _commit_error(exc: KafkaException) -> BaseException:
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is not None and error.code() in _COMMIT_REFUSED:
        return CommitRefused(error.str())
    return KafkaUnavailable(repr(exc))


class ConfluentAdapter:
    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        reader_config: dict[str, Any],
        watch: _Watch,
        refusal_grace_s: float,
        *,
        transactions: Transactions | None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._transactions = transactions
        self._reader_config = reader_config
        self._reader: Consumer | None = None  # reads the reply topic at handoffs; made when first needed
        self._watch = watch
        self._refusal_grace_s = refusal_grace_s
        self._relay: ListenerRelay | None = None
        # Async commits awaiting librdkafka's answer: (what was asked, its callback).
        self._commits: deque[
            tuple[frozenset[tuple[str, int, int]], Commits, Callable[[Commits, BaseException | None], None]]
        ] = deque()
        self._missing_topics: set[str] = set()

    @classmethod
    def connect(cls, how: Connection) -> ConfluentAdapter:
        """Create both clients (librdkafka connects in the background: an unreachable
        broker shows as no records, as with kafka-python). KafkaOptionInvalid when
        librdkafka refuses an option (its message names it)."""
        watch = _Watch(how.bootstrap_servers)
        adapter: ConfluentAdapter | None = None

        def on_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
            if adapter is not None:
                adapter._commit_done(error, partitions)

        producer_config = {
            "client.id": how.client_id,
            **PRODUCER_DEFAULTS,
            **how.producer_options,
            "bootstrap.servers": how.bootstrap_servers,
            "acks": "all",
            "partitioner": "murmur2_random",
            "error_cb": watch.error,
            "logger": LIBRDKAFKA_LOG,
        }
        consumer_config = {
            "client.id": how.client_id,
            **CONSUMER_DEFAULTS,
            **how.consumer_options,
            "bootstrap.servers": how.bootstrap_servers,
            "group.id": how.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range,roundrobin",
            "on_commit": on_commit,
            "error_cb": watch.error,
            "logger": LIBRDKAFKA_LOG,
        }
        if how.group_instance_id:
            consumer_config["group.instance.id"] = how.group_instance_id
        if how.transactional_id:
            producer_config["transactional.id"] = how.transactional_id
        try:
            producer = Producer(producer_config)
        except (KafkaException, TypeError, ValueError) as exc:
            raise KafkaOptionInvalid(
                f"the Kafka producer refused its options ([kafka], [kafka.producer]): {exc}"
            ) from exc
        try:
            consumer = Consumer(consumer_config)
        except (KafkaException, TypeError, ValueError) as exc:
            producer.flush(0)
            raise KafkaOptionInvalid(
                f"the Kafka consumer refused its options ([kafka], [kafka.consumer]): {exc}"
            ) from exc
        reader_config = {
            **how.consumer_options,
            "bootstrap.servers": how.bootstrap_servers,
            "client.id": f"{how.client_id}-handoff",
            "group.id": f"{how.group_id}.handoff-reader",
            "enable.auto.commit": False,
            # librdkafka reads committed messages only (its default isolation.level) and its
            # watermarks then end at the last stable offset; a transaction's last offset is
            # its commit marker, never delivered, so the end of a read is the EOF event.
            "enable.partition.eof": True,
            # The end is known only from a fetch that finds nothing more: do not let the
            # broker hold that fetch for its default 500 ms (a handoff reads several).
            "fetch.wait.max.ms": 10,
            "error_cb": watch.error,
            "logger": LIBRDKAFKA_LOG,
        }
        transactions = None
        if how.transactional_id:
            transactions = Transactions(producer, consumer, HANDOFF_TIMEOUT_S)
            try:
                transactions.init()
            except (KafkaUnavailable, TransactionAborted):
                consumer.close()
                raise
        adapter = cls(consumer, producer, reader_config, watch, how.refusal_grace_s, transactions=transactions)
        return adapter

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._relay = ListenerRelay(listener)
        self._consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalance("assigned", partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalance("revoked", partitions)

    def _rebalance(self, what: str, partitions: list[TopicPartition]) -> None:
        if self._relay is not None:  # None once closing: librdkafka revokes while it closes
            self._relay.call(what, [(tp.topic, tp.partition) for tp in partitions])

    def poll(self, timeout_ms: int, max_records: int) -> Poll:
        self._producer.poll(0)  # delivery reports of acks and dead letters
        try:
            messages = consume_ready(self._consumer, max_records, timeout_ms / 1000)
        except KafkaException as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        if self._relay is not None:
            self._relay.raise_pending()
        self._watch.check(self._refusal_grace_s)
        records: dict[tuple[str | None, int | None], list[_Record]] = {}
        current: list[_Record] = []
        current_key: tuple[str | None, int | None] | None = None
        for message in messages:
            if message.error() is not None:
                self._message_error(message)
                continue
            key = (message.topic(), message.partition())
            if key != current_key:
                current_key = key
                current = records.setdefault(key, [])
            current.append(_new(_Record, (message.offset(), message.value(), message)))
        return cast(Poll, records)  # a consumed message names its topic and partition

    def _message_error(self, message: Message) -> None:
        error = message.error()
        if error is None:
            return
        if error.fatal() or error.code() == KafkaError._FATAL:  # the client is done for
            raise _fatal(error)
        if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            if message.topic() not in self._missing_topics:
                self._missing_topics.add(message.topic() or "")
                log.warning("input topic %s does not exist (yet); waiting for it", message.topic())
            return
        if error.code() in _REFUSED:
            self._watch.error(error)
            return
        log.warning("consumer error (librdkafka retries it): %s", error.str())

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> _Delivery:
        delivery = _Delivery(self._producer)
        if self._transactions is not None:
            self._transactions.begin()
        try:
            produce_waiting(
                self._producer, topic, value, key, delivery.delivered, headers=list(headers) if headers else None
            )
        except BufferError:
            raise KafkaUnavailable(f"the producer queue stayed full for {MAX_BLOCK_S:.0f} s") from None
        except KafkaException as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        return delivery

    def flush(self) -> None:
        # Returns once every message is delivered or failed (message.timeout.ms bounds it).
        self._producer.flush()

    def commit_async(self, commits: Commits, on_done: Callable[[Commits, BaseException | None], None]) -> None:
        if self._transactions is not None:  # a transaction commits synchronously
            try:
                self._transactions.commit(_topic_partitions(commits))
            except KafkaUnavailable as exc:  # still open: the next commit (or the drain's) retries it
                on_done(commits, exc)
                return
            on_done(commits, None)
            return
        asked = frozenset((topic, partition, offset) for (topic, partition), (offset, _) in commits.items())
        self._commits.append((asked, commits, on_done))
        try:
            self._consumer.commit(offsets=_topic_partitions(commits), asynchronous=True)
        except KafkaException as exc:
            self._commits.pop()
            on_done(commits, _commit_error(exc))

    def _commit_done(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's answer to a commit (async or sync: it reports both); only the
        async ones are waited for."""
        answered = frozenset((tp.topic, tp.partition, tp.offset) for tp in partitions)
        for index, (asked, commits, on_done) in enumerate(self._commits):
            if asked == answered:
                del self._commits[index]
                failed = error or next((tp.error for tp in partitions if tp.error is not None), None)
                on_done(commits, None if failed is None else _commit_error(KafkaException(failed)))
                return

    def commit_sync(self, commits: Commits) -> None:
        if self._transactions is not None:
            self._transactions.commit(_topic_partitions(commits))
            return
        try:
            _raise_partition_errors(self._consumer.commit(offsets=_topic_partitions(commits), asynchronous=False))
        except KafkaException as exc:
            raise _commit_error(exc) from exc

    def committed(
        self, partitions: Sequence[Partition], timeout_s: float | None = None
    ) -> dict[Partition, tuple[int, str] | None]:
        try:
            found = self._consumer.committed(
                [TopicPartition(topic, number) for topic, number in partitions],
                timeout=HANDOFF_TIMEOUT_S if timeout_s is None else timeout_s,
            )
            _raise_partition_errors(found)
        except KafkaException as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        return {(tp.topic, tp.partition): None if tp.offset < 0 else (tp.offset, _metadata(tp)) for tp in found}

    def partitions(self, topic: str, timeout_s: float) -> list[int]:
        try:
            metadata = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        return [] if metadata is None or metadata.error is not None else sorted(metadata.partitions)

    def watermarks(self, partitions: Sequence[Partition]) -> dict[Partition, tuple[int, int]]:
        try:
            return {
                (topic, number): self._consumer.get_watermark_offsets(
                    TopicPartition(topic, number), timeout=HANDOFF_TIMEOUT_S
                )
                for topic, number in partitions
            }
        except KafkaException as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def reply_partition(self, topic: str, key: bytes) -> int | None:
        """The partition the producer sends ``key`` to (murmur2, as kafka-python's
        default partitioner); None while the topic's partitions are unknown."""
        try:
            metadata = self._producer.list_topics(topic, timeout=HANDOFF_TIMEOUT_S).topics.get(topic)
        except KafkaException as exc:
            raise KafkaUnavailable(repr(exc)) from exc
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return None
        return partition_of(key, len(metadata.partitions))

    def read_from(self, topic: str, partition: int, offset: int) -> list[bytes | None]:
        """Every message value of a partition from ``offset`` (or its earliest retained
        one) to its end as of this call."""
        try:
            if self._reader is None:
                self._reader = Consumer(self._reader_config)
            reader = self._reader
            low, end = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=HANDOFF_TIMEOUT_S)
            start = max(offset, low)
            values: list[bytes | None] = []
            if start >= end:
                return values
            reader.assign([TopicPartition(topic, partition, start)])
            deadline = time.monotonic() + HANDOFF_TIMEOUT_S
            last = start - 1
            while last < end - 1:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"reading {topic}:{partition} from {start} to {end} took over {HANDOFF_TIMEOUT_S:.0f} s"
                    )
                for message in reader.consume(10_000, 0.2):
                    error = message.error()
                    if error is not None:
                        if error.fatal():
                            raise KafkaException(error)
                        if error.code() == KafkaError._PARTITION_EOF and cast(int, message.offset()) >= end:
                            last = end - 1  # at the end: what is left before it is transaction markers
                        continue
                    last = cast(int, message.offset())  # a message without an error has one
                    if last < end:
                        values.append(message.value())
            reader.unassign()
            return values
        except KafkaException as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    def lag(self) -> dict[Partition, tuple[int, int]] | None:
        found: dict[Partition, tuple[int, int]] = {}
        try:
            assigned = self._consumer.assignment()
            for tp in self._consumer.position(assigned) if assigned else ():
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0 or tp.offset < 0:
                    return None
                found[(tp.topic, tp.partition)] = (high, max(0, high - tp.offset))
        except Exception:  # noqa: BLE001 - a progress line must never stop the service
            return None
        return found

    def close(self) -> None:
        # Never commit on close (everything that may be committed already was), and never
        # drain: librdkafka revokes the assignment while closing.
        self._relay = None
        if self._transactions is not None:  # what it holds was not committed: never make it visible
            self._transactions.abort()
        self._consumer.close()
        self._producer.flush(5)
        if self._reader is not None:
            self._reader.close()
