"""A broker outage under a running service: a broker of its own, SIGKILLed and restarted."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import kafka_local
from tests.support.service_helpers import Service, acks_cover, committed, dump, end_offsets, event, produce

pytestmark = pytest.mark.kafka

TOPIC = "signals"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[list[kafka_local.JarBroker]]:
    """A jar broker only this test uses (killing the session's would break the others).
    Yields a one-element list so the test can swap in the restarted broker."""
    if not shutil.which("java"):
        pytest.skip("needs Java for a broker of its own (the jar broker), to kill and restart it")
    holder = [kafka_local.start_jar_broker(tmp_path / "kafka", kafka_local.free_port(), tied_to_parent=True)]
    try:
        yield holder
    finally:
        holder[0].stop()


def await_committed(
    bootstrap: str, group: str, wanted: dict[int, int], service: Service, timeout: float = 90.0
) -> None:
    deadline = time.monotonic() + timeout
    while (now := committed(bootstrap, group, TOPIC, len(wanted))) != wanted:
        assert time.monotonic() < deadline, f"committed {now}, wanted {wanted}:\n{service.log()}"
        time.sleep(0.2)


def test_broker_killed_and_restarted_under_the_service_loses_nothing_stores_nothing_twice(
    own_broker: list[kafka_local.JarBroker], tmp_path: Path
) -> None:
    bootstrap = own_broker[0].bootstrap
    kafka_local.service_topics(bootstrap, TOPIC, 2)
    wal_dir = tmp_path / "wal"
    service = Service(bootstrap, TOPIC, wal_dir, group="outage", reply=f"{TOPIC}.acks", dlq=f"{TOPIC}.dlq")
    before = produce(bootstrap, TOPIC, [event(i) for i in range(400)])
    acks_cover(bootstrap, f"{TOPIC}.acks", before)

    broker = own_broker[0]
    broker.process.send_signal(signal.SIGKILL)  # no clean shutdown: a crash or a network cut
    broker.process.wait()
    service.wait_for_more("consumer.ops.recorder", 4)  # stays up through the outage, reporting progress

    own_broker[0] = kafka_local.restart_jar_broker(broker)
    after = produce(bootstrap, TOPIC, [event(i) for i in range(400, 800)])
    acks = acks_cover(bootstrap, f"{TOPIC}.acks", before + after)
    # The outage outlived the group session, so the broker dropped the service from the
    # group: it rejoins by itself and then commits everything it stored.
    await_committed(bootstrap, "outage", end_offsets(bootstrap, TOPIC, 2), service)
    assert service.stop() == 0, service.log()

    stored = dump(wal_dir)
    assert [r["seq"] for r in stored] == list(range(1, 801))  # gap-free, nothing stored twice
    assert sorted(r["entity_id"] for r in stored) == list(range(800))
    seq_of = {(r["source"]["partition"], r["source"]["offset"]): r["seq"] for r in stored}
    # every offset acked with the seq its event got (a redelivery after the group rejoins
    # is acked as a duplicate, with the same seq)
    assert {pos: seq for pos, (_, seq) in acks.items()} == seq_of
    assert {status for status, _ in acks.values()} <= {"acked", "duplicate"}


def test_a_wiped_broker_is_a_new_source_stored_and_acked_anew(
    own_broker: list[kafka_local.JarBroker], tmp_path: Path
) -> None:
    """The cluster's data is lost and the broker comes back empty at the same address:
    offsets start again at 0, holding other messages. They are new events, not redeliveries."""
    bootstrap = own_broker[0].bootstrap
    kafka_local.service_topics(bootstrap, TOPIC, 2)
    wal_dir = tmp_path / "wal"
    before = produce(bootstrap, TOPIC, [event(i) for i in range(300)])
    service = Service(bootstrap, TOPIC, wal_dir, group="wiped", reply=f"{TOPIC}.acks", dlq=f"{TOPIC}.dlq")
    acks_cover(bootstrap, f"{TOPIC}.acks", before)
    assert service.stop() == 0
    old = own_broker[0]
    old.stop()
    own_broker[0] = kafka_local.start_jar_broker(tmp_path / "kafka-wiped", old.port, tied_to_parent=True)
    kafka_local.service_topics(bootstrap, TOPIC, 2)
    after = produce(bootstrap, TOPIC, [event(i) for i in range(1000, 1300)])
    assert set(after) <= set(before)  # the same positions, other messages
    service = Service(bootstrap, TOPIC, wal_dir, group="wiped", reply=f"{TOPIC}.acks", dlq=f"{TOPIC}.dlq")
    acks = acks_cover(bootstrap, f"{TOPIC}.acks", after)
    assert service.stop() == 0, service.log()
    assert sorted(seq for _, seq in acks.values()) == list(range(301, 601))  # new seqs, none of the old
    assert sorted(r["entity_id"] for r in dump(wal_dir)[300:]) == list(range(1000, 1300))
    assert "new source" in service.log()
