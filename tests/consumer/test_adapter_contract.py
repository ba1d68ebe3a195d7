"""The adapter contract (consumer.kafka.adapter.KafkaAdapter), one suite run against each
backend (after arroyo's tests/backends/mixins.py): the service's loop, commit step and
handoff rely on exactly these behaviours, whichever client library is underneath. Real
broker; each test makes its own topics and group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from consumer.config import load_settings
from consumer.kafka.adapter import KafkaAdapter, Partition
from consumer.kafka.backends import connect
from consumer.protocol.types import Commits, Poll
from tests.support.service_helpers import produce

pytestmark = pytest.mark.kafka


class Recorder:
    """A rebalance listener that notes what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Partition]]] = []

    def revoked(self, partitions: Sequence[Partition]) -> None:
        self.calls.append(("revoked", list(partitions)))

    def assigned(self, partitions: Sequence[Partition]) -> None:
        self.calls.append(("assigned", list(partitions)))


@pytest.fixture
def make_adapter(kafka_bootstrap: str, backend: str) -> Iterator[Callable[[str], KafkaAdapter]]:
    made: list[KafkaAdapter] = []

    def make(topic: str) -> KafkaAdapter:
        settings = load_settings(
            bootstrap_servers=kafka_bootstrap,
            topics=[topic],
            group_id=f"contract-{uuid.uuid4().hex[:8]}",
            reply_topic=f"{topic}.r",
            dlq_topic=f"{topic}.d",
            backend=backend,
        )
        adapter = connect(settings, client_id="contract", group_instance_id=None)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


def poll_until(adapter: KafkaAdapter, wanted: int, timeout: float = 60.0) -> dict[Partition, list]:
    got: dict[Partition, list] = {}
    deadline = time.monotonic() + timeout
    while sum(map(len, got.values())) < wanted:
        assert time.monotonic() < deadline, f"polled {sum(map(len, got.values()))} of {wanted}"
        poll: Poll = adapter.poll(200, 1000)
        for partition, records in poll.items():
            got.setdefault(partition, []).extend(records)
    return got


def test_poll_delivers_each_partitions_records_in_offset_order_after_the_assignment(
    make_topic: Callable[..., str], kafka_bootstrap: str, make_adapter: Callable[[str], KafkaAdapter]
) -> None:
    topic = make_topic("contract", 3)
    positions = produce(kafka_bootstrap, topic, [{"n": n} for n in range(30)])
    adapter, listener = make_adapter(topic), Recorder()
    adapter.subscribe([topic], listener)
    got = poll_until(adapter, 30)
    told = [call for call in listener.calls if call[1]]  # kafka-python first revokes nothing at the join
    assert told == [("assigned", [(topic, 0), (topic, 1), (topic, 2)])]  # inside poll, sorted, once
    for (got_topic, partition), records in got.items():
        assert [r.offset for r in records] == sorted(o for p, o in positions if p == partition)
        assert all((r.topic, r.partition) == (got_topic, partition) for r in records)
        assert all(r.key is not None and r.value is not None and r.timestamp > 0 for r in records)


def test_a_send_reports_its_position_and_a_commit_reads_back_with_its_metadata(
    make_topic: Callable[..., str], make_adapter: Callable[[str], KafkaAdapter]
) -> None:
    topic = make_topic("contract", 2)
    adapter = make_adapter(topic)
    delivery = adapter.send(topic, b"k", b"v", headers=[("h", b"1")])
    adapter.flush()
    assert delivery.done() and delivery.error() is None
    position = delivery.position()
    assert position is not None and position[0] == adapter.reply_partition(topic, b"k")
    assert adapter.watermarks([(topic, position[0])]) == {(topic, position[0]): (0, position[1] + 1)}
    assert adapter.read_from(topic, position[0], 0) == [b"v"]
    assert adapter.partitions(topic, 30) == [0, 1]
    assert adapter.committed([(topic, 0), (topic, 1)]) == {(topic, 0): None, (topic, 1): None}
    adapter.commit_sync({(topic, 0): (1, '{"v":1}'), (topic, 1): (0, "")})
    assert adapter.committed([(topic, 0), (topic, 1)], 30) == {(topic, 0): (1, '{"v":1}'), (topic, 1): (0, "")}


def test_an_async_commit_reports_once_on_a_later_poll(
    make_topic: Callable[..., str], kafka_bootstrap: str, make_adapter: Callable[[str], KafkaAdapter]
) -> None:
    topic = make_topic("contract", 1)
    produce(kafka_bootstrap, topic, [{"n": n} for n in range(5)])
    adapter = make_adapter(topic)
    adapter.subscribe([topic], Recorder())
    poll_until(adapter, 5)
    reports: list[tuple[Commits, BaseException | None]] = []
    adapter.commit_async({(topic, 0): (5, "m")}, lambda commits, error: reports.append((commits, error)))
    deadline = time.monotonic() + 30
    while not reports:  # the callback runs inside poll, on the caller's thread
        assert time.monotonic() < deadline
        adapter.poll(100, 10)
    assert reports == [({(topic, 0): (5, "m")}, None)]
    assert adapter.committed([(topic, 0)]) == {(topic, 0): (5, "m")}
    lag = adapter.lag()
    assert lag is not None and lag[(topic, 0)] == (5, 0)
