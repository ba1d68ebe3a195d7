"""Session fixtures: one real Kafka broker for the whole run, unique topics per test.

The broker comes from scripts/kafka_local.py (TIDAL_KAFKA_BOOTSTRAP, else Docker, else
the Maven Central jars). It starts only when a test asks for it, so the WAL unit tests
run without Java. A failing test gets the broker's log tail in its report.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from scripts import kafka_local

_broker: kafka_local.JarBroker | None = None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    global _broker
    with kafka_local.session_broker() as (bootstrap, broker):
        _broker = broker
        yield bootstrap
        _broker = None


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tidal-tests")
    yield admin
    admin.close()


@pytest.fixture
def make_topic(kafka_admin: KafkaAdminClient) -> Callable[..., str]:
    """Create a uniquely named topic (so tests never collide) and return its name."""

    def create(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka_admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        return name

    return create


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and _broker is not None and "kafka_bootstrap" in getattr(item, "fixturenames", ()):
        report.sections.append(("kafka broker log (tail)", _broker.log_tail()))
    return report
