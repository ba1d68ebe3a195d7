"""DurableProducer against the real broker and the real service, each test once per Kafka
backend (the client's and the service's the same)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from consumer.client import AckTimeout, DurableProducer, EventRejected, InvalidEvent, SendFailed
from consumer.kafka.confluent import calls as confluent_calls
from consumer.protocol.events import SignalEvent
from tests.support.consumer_fixtures import PARTITIONS, Topics
from tests.support.service_helpers import dump, end_offsets, event, produce

pytestmark = pytest.mark.kafka


def client(topics: Topics, **kwargs: object) -> DurableProducer:
    """A DurableProducer on the backend the test runs (TIDAL_BACKEND, set by tests/consumer/conftest.py)."""
    return DurableProducer(
        topics.bootstrap,
        topics.signals,
        topics.reply,  # type: ignore[arg-type]
        backend=os.environ["TIDAL_BACKEND"],
        **kwargs,
    )


def test_1000_events_resolve_to_the_seqs_in_walcore_dump(topics: Topics, tmp_path: Path) -> None:
    service = topics.service(tmp_path / "wal")
    with client(topics) as producer:
        futures = [producer.send(event(i) if i % 2 else SignalEvent(**event(i))) for i in range(1000)]
        results = [f.result(timeout=90) for f in futures]
    assert service.stop() == 0
    rows = {(r["source"]["partition"], r["source"]["offset"]): r for r in dump(tmp_path / "wal")}
    assert len(rows) == 1000
    for i, result in enumerate(results):
        row = rows[(result.partition, result.offset)]
        assert (row["seq"], row["entity_id"]) == (result.seq, i)
        assert not result.duplicate
    assert len({r.wal_id for r in results}) == 1
    assert sorted(r.seq for r in results) == list(range(1, 1001))


def test_malformed_messages_on_the_reply_topic_are_skipped_and_every_future_still_resolves(
    topics: Topics, tmp_path: Path
) -> None:
    service = topics.service(tmp_path / "wal")
    with client(topics) as producer:
        malformed = [
            {
                "v": 1,
                "wal_id": "w",
                "topic": topics.signals,
                "partition": 0,
                "acked": "no",
                "duplicates": [],
                "rejected": [],
            },  # names the right topic, wrong shape
            {
                "v": 1,
                "wal_id": "w",
                "topic": topics.signals,
                "partition": 0,
                "acked": [[0, 0, 1]],
                "duplicates": [[1, "x"]],
                "rejected": [],
            },
            # One run of 10^12 offsets: once expanded into a list by the reader (GBs of RAM).
            {
                "v": 1,
                "wal_id": "w",
                "topic": topics.signals,
                "partition": 0,
                "acked": [[0, 10**12, 1]],
                "duplicates": [],
                "rejected": [],
            },
        ]
        produce(topics.bootstrap, topics.reply, [*malformed, b"\xff not json", None], key=b"noise")
        futures = [producer.send(event(i)) for i in range(1000)]
        results = [f.result(timeout=90) for f in futures]
        assert producer.skipped_replies == 5
    assert service.stop() == 0
    assert sorted(r.seq for r in results) == list(range(1, 1001))


def test_rejected_event_fails_with_the_reason(topics: Topics, tmp_path: Path) -> None:
    service = topics.service(tmp_path / "wal")
    with client(topics) as producer:
        with pytest.raises(EventRejected, match="unknown signal type 'teleport'") as err:
            producer.send_and_wait(event(1, signal_type="teleport"), timeout=90)
        assert "teleport" in err.value.reason
    assert service.stop() == 0


def test_duplicate_resolves_with_the_original_seq(topics: Topics, tmp_path: Path) -> None:
    service = topics.service(tmp_path / "wal")
    with client(topics) as producer:
        first = producer.send_and_wait(event(5, event_id="checkout-5"), timeout=90)
        retry = producer.send_and_wait(event(5, event_id="checkout-5", weight=2.0), timeout=90)
    assert service.stop() == 0
    assert (retry.seq, retry.duplicate, first.duplicate) == (first.seq, True, False)
    assert retry.offset != first.offset


def test_invalid_event_fails_locally_and_never_reaches_the_topic(topics: Topics) -> None:
    before = end_offsets(topics.bootstrap, topics.signals, PARTITIONS)
    with client(topics, signal_types={"view"}) as producer:
        with pytest.raises(InvalidEvent, match="weight"):
            producer.send(event(1, weight=float("inf")))
        with pytest.raises(InvalidEvent, match="entity_id"):
            producer.send({**event(1), "entity_id": 2**64})
        with pytest.raises(InvalidEvent, match="signal_type"):
            producer.send(event(1, signal_type="click"))
        producer.flush()
    assert end_offsets(topics.bootstrap, topics.signals, PARTITIONS) == before


def test_timeout_fires_when_the_service_is_stopped(topics: Topics) -> None:
    with client(topics, ack_timeout=1.5) as producer:
        future = producer.send(event(1))
        with pytest.raises(AckTimeout, match="no ack"):
            future.result(timeout=30)


def test_an_ack_that_arrives_before_the_send_callback_still_resolves(topics: Topics) -> None:
    """The race the reply reader must handle: the broker acked the send, the service stored
    and acked it, and the ack was read before the producer's metadata callback ran."""
    import json
    import time
    from concurrent.futures import Future

    with client(topics) as producer:
        ack = {
            "v": 1,
            "wal_id": "w",
            "topic": topics.signals,
            "partition": 2,
            "acked": [[10, 19, 500]],
            "duplicates": [[20, 7]],
            "rejected": [[21, "weight: bad"]],
        }
        with producer._lock:
            for i in range(200):  # older acks of other producers, kept for the race window
                producer._on_ack(
                    json.dumps({**ack, "acked": [[i, i, i]], "duplicates": [], "rejected": []}).encode(),
                    time.monotonic(),
                )
            producer._on_ack(json.dumps(ack).encode(), time.monotonic())
        acked: Future = Future()
        duplicate: Future = Future()
        rejected: Future = Future()
        deadline = time.monotonic() + 5
        producer._register(topics.signals, 2, 15, acked, deadline)
        producer._register(topics.signals, 2, 20, duplicate, deadline)
        producer._register(topics.signals, 2, 21, rejected, deadline)
        assert acked.result(timeout=0).seq == 505
        assert duplicate.result(timeout=0)[1:3] == (7, True)
        with pytest.raises(EventRejected, match="weight: bad"):
            rejected.result(timeout=0)


def test_an_unknown_backend_or_a_bad_option_fails_at_construction_naming_it(topics: Topics, backend: str) -> None:
    with pytest.raises(ValueError, match="backend: 'kafka' is not one of 'kafka-python', 'confluent'"):
        DurableProducer(topics.bootstrap, topics.signals, topics.reply, backend="kafka")
    # Each client's own refusal of an option it does not know, raised before anything is sent.
    with pytest.raises(ValueError, match=r"refused the DurableProducer options: .*lingre"):
        client(topics, **{"lingre.ms" if backend == "confluent" else "lingre_ms": 5})


def test_an_event_the_broker_refuses_fails_with_send_failed_and_the_next_ones_still_resolve(
    topics: Topics, tmp_path: Path, kafka_admin: KafkaAdminClient
) -> None:
    """A send the broker refuses (over the input topic's message limit) fails its own future
    with SendFailed, on each backend's delivery path; it never waits out the ack timeout,
    and sends after it are unaffected."""
    tiny = f"tiny-{topics.group}"
    # The limit is per record batch: one small event fits, the long one does not. Sent one
    # at a time, so that no batch holds more than one of them.
    kafka_admin.create_topics([NewTopic(tiny, 1, 1, topic_configs={"max.message.bytes": "320"})])
    service = topics.service(tmp_path / "wal", extra=["--topic", tiny])
    with DurableProducer(
        topics.bootstrap, tiny, topics.reply, backend=os.environ["TIDAL_BACKEND"], ack_timeout=60
    ) as producer:
        refused = producer.send(event(1, event_id="x" * 250))  # ~420 bytes as a batch
        with pytest.raises(SendFailed, match="did not accept"):
            refused.result(timeout=30)
        assert [producer.send_and_wait(event(i), timeout=90).seq for i in range(2, 7)] == [1, 2, 3, 4, 5]
    assert service.stop() == 0


def test_a_send_the_client_cannot_take_within_its_block_time_fails_with_send_failed(
    topics: Topics, tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send() gives up once the client's block time has passed (60 s by default, shortened
    here) instead of hanging: librdkafka's queue full (room for one message, held back by a
    long linger), kafka-python's metadata never coming (a topic name the broker refuses).
    With librdkafka the event queued before it still resolves, and so do later ones."""
    if backend == "kafka-python":
        with (
            DurableProducer(
                topics.bootstrap, "no such topic!", topics.reply, backend=backend, max_block_ms=500
            ) as producer,
            pytest.raises(SendFailed, match="did not take"),
        ):
            producer.send(event(1))
        return
    monkeypatch.setattr(confluent_calls, "MAX_BLOCK_S", 0.5)
    service = topics.service(tmp_path / "wal")
    with client(topics, ack_timeout=60, **{"queue.buffering.max.messages": 1, "linger.ms": 1500}) as producer:
        queued = producer.send(event(1))
        waited_from = time.monotonic()
        with pytest.raises(SendFailed, match="did not take"):
            producer.send(event(2))
        assert time.monotonic() - waited_from >= 0.5  # it waited for room before giving up
        assert queued.result(timeout=60).seq == 1
        assert producer.send_and_wait(event(3), timeout=60).seq == 2
    assert service.stop() == 0
