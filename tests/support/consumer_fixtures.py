"""Fixtures for the service tests: fresh topics and a group per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.service_helpers import Service

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
