"""The service's exit codes and the errors that lead to them (docs/operations.md).

One table, so the CLI, the service loop and the docs cannot drift apart. Each error
type is adapter-neutral: the Kafka client adapter translates its library's exceptions
into these, so the service loop and the commit step never import a Kafka client.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # stopped by SIGTERM/SIGINT after draining
    CONFIG = 1  # invalid configuration (the message names the field)
    WAL_UNUSABLE = 2  # the WAL directory is locked by another instance, or not a usable directory
    WAL_FATAL = 3  # write/fsync failure or corruption: nothing of the batch committed; a restart recovers
    DELIVERY = 4  # an ack or dead letter was not delivered: nothing of its batch committed
    KAFKA = 5  # Kafka unreachable beyond the client's own timeouts: nothing uncommitted is lost
    CODEC = 6  # records compressed with a codec whose library is not installed: nothing of them consumed
    KAFKA_REFUSED = 7  # the broker refused us (credentials, TLS trust) beyond the grace period
    STORE = 8  # the signal store failed or follows another WAL: nothing is lost (the WAL holds it all)
    PARTIAL = 9  # `query --peers`: the answer is not the whole group's (a store did not answer)
    FENCED = 10  # delivery = "transactional": a batch's transaction was fenced or aborted; none of its acks is visible


class DeliveryFailed(RuntimeError):
    """An ack or DLQ message could not be delivered: nothing of its batch is committed."""


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached (or answered with an error) beyond what the
    client retries by itself. The adapter's original exception is the cause."""


class CommitRefused(RuntimeError):
    """The group coordinator refused an offset commit for good: the group rebalanced and
    this member no longer owns (some of) the partitions. Retrying cannot succeed."""


class TransactionAborted(RuntimeError):
    """delivery = "transactional": the transaction holding a batch's acks, dead letters and
    offset commit was aborted (the group generation moved on: this instance lost its
    partitions while paused) or could not commit. None of it is visible; the WAL's copies
    are orphans, voided at this WAL's next assignment once their new owner acked them."""


class RegistrationRefused(RuntimeError):
    """The commit that names this WAL in a newly assigned partition's mark was refused: the
    group is rebalancing again. Nothing of the poll that ran the assignment is stored; the
    rejoin that a refused commit forces assigns the partitions again, from their commits."""


class KafkaOptionInvalid(ValueError):
    """The Kafka client refused an option's value (its name passed the config check)."""


class WalTailLost(RuntimeError):
    """The WAL no longer holds events it acknowledged (its own commit metadata or acks on
    the reply topic name higher seqs): a deleted last segment, a restored old copy.
    Running on would hand those (wal_id, seq) pairs to other events."""


class WalRunningElsewhere(RuntimeError):
    """Another process joined the group as this WAL (its static member id, or its
    transactional id): a copy of the WAL directory runs elsewhere, which the WAL's lock
    cannot see. Two copies would give one (wal_id, seq) to two events."""


class CodecMissing(RuntimeError):
    """Records arrived compressed with a codec the Kafka client cannot decompress here."""


class KafkaRefused(RuntimeError):
    """The broker refuses this client: SASL credentials rejected or its TLS certificate not
    trusted. Retrying does not help until the configuration (or the broker) changes."""


class StoreFailed(RuntimeError):
    """The signal store (walcore.storage) failed to apply, flush or open: the WAL still
    holds every event, and a restart applies what the store lacks."""
