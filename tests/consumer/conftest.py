"""Service/client test fixtures: fresh topics per test (tests/support/consumer_fixtures.py), no
service process outliving the test that started it, even when the test fails, and every
test that talks to a broker (the session's, or one of its own: marked ``kafka``) run once
per Kafka backend (kafka-python, confluent).

The backend reaches the service through ``TIDAL_BACKEND`` (a subprocess inherits it; an
in-process Settings reads it). A test about one backend's own behaviour says so with
``@pytest.mark.backends("kafka-python")``; so does a test whose subject the Kafka client
does not reach (the store stage, fed by the WAL; the query API), on one backend or the
other, so both still feed it somewhere and CI does not pay for it twice.
"""

from collections.abc import Iterator

import pytest

from tests.support.consumer_fixtures import topics
from tests.support.service_helpers import STARTED

__all__ = ["topics"]

BACKENDS = ("kafka-python", "confluent")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kafka_bootstrap" in metafunc.fixturenames or metafunc.definition.get_closest_marker("kafka"):
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend", marker.args if marker else BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Kafka backend this test's services use (kafka-python for tests without a broker)."""
    name: str = getattr(request, "param", "kafka-python")
    monkeypatch.setenv("TIDAL_BACKEND", name)
    return name


@pytest.fixture(autouse=True)
def _kill_leftover_services() -> Iterator[None]:
    yield
    while STARTED:
        STARTED.pop().kill()
