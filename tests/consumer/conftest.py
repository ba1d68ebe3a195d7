"""Service/client test fixtures: fresh topics per test (tests/consumer_fixtures.py), and
no service process outliving the test that started it, even when the test fails."""

from collections.abc import Iterator

import pytest
from consumer_fixtures import topics
from service_helpers import STARTED

__all__ = ["topics"]


@pytest.fixture(autouse=True)
def _kill_leftover_services() -> Iterator[None]:
    yield
    while STARTED:
        STARTED.pop().kill()
