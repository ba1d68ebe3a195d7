"""Fixtures for the service tests: fresh topics and a group per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.service_helpers import Service, committed, end_offsets

PARTITIONS = 4


@dataclass
class Topics:
    bootstrap: str
    signals: str
    reply: str
    dlq: str
    group: str

    def service(self, wal_dir: Path, **kwargs: object) -> Service:
        return Service(
            self.bootstrap, self.signals, wal_dir, group=self.group, reply=self.reply, dlq=self.dlq, **kwargs
        )  # type: ignore[arg-type]


@pytest.fixture
def topics(kafka_bootstrap: str, make_topic: Callable[..., str]) -> Topics:
    return Topics(
        kafka_bootstrap,
        make_topic("signals", PARTITIONS),
        make_topic("acks", PARTITIONS),
        make_topic("dlq", 1),
        f"group-{uuid.uuid4().hex[:8]}",
    )


def await_committed(topics: Topics, service: Service, timeout: float = 60.0) -> None:
    """Until the group's commits reach the end of every input partition (None: an empty one)."""
    wanted = {p: o or None for p, o in end_offsets(topics.bootstrap, topics.signals, PARTITIONS).items()}
    deadline = time.monotonic() + timeout
    while (now := committed(topics.bootstrap, topics.group, topics.signals, PARTITIONS)) != wanted:
        assert time.monotonic() < deadline, f"committed {now}, wanted {wanted}:\n{service.log()}"
        time.sleep(0.1)
