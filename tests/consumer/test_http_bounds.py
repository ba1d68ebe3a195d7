"""The service's HTTP server (metrics, probes, query API) under hostile or heavy clients, on
127.0.0.1 with bounded loops: oversized headers are refused at 16 KiB, idle and half-open
connections cannot take more than MAX_CONNECTIONS threads, a burst of 200 scrapers is
answered whole, and an empty metrics_host is a configuration error."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from consumer.config import ConfigError, load_settings
from consumer.ops.health import IDLE_TIMEOUT_S, MAX_CONNECTIONS, Endpoints, Health
from consumer.serving.api import QueryApi


@pytest.fixture
def server() -> Iterator[Endpoints]:
    endpoints = Endpoints("127.0.0.1", 0, Health(60.0), CollectorRegistry(), QueryApi(lambda: None))
    yield endpoints
    endpoints.close()


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        return answer.status


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_a_header_section_over_the_budget_is_refused_and_not_kept(server: Endpoints) -> None:
    """20 requests left unfinished after 99 headers of 65 KB each (http.server alone keeps
    them: 6.4 MB a request, +124 MiB): each is answered 431 once 16 KiB have arrived and
    closed, and the server (this process) holds none of it."""
    header = b"X-Pad: " + b"a" * 65_000 + b"\r\n"
    before = rss_bytes()
    connections = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    try:
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            try:
                for _ in range(99):
                    connection.sendall(header)
            except OSError:  # refused and closed: the rest is never read
                pass
        grown = rss_bytes() - before
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 431")
    finally:
        for connection in connections:
            connection.close()
    assert grown < 20 * 2**20, f"the server kept {grown / 2**20:.0f} MiB of headers"
    assert healthz(server.port) == 200


def test_idle_and_half_open_connections_take_bounded_threads_and_expire(server: Endpoints) -> None:
    before = threading.active_count()
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(400)]
    try:
        deadline = time.monotonic() + 10
        while threading.active_count() < before + MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= before + MAX_CONNECTIONS + 2  # the server's own thread, slack
    finally:
        for connection in held:
            connection.close()
    # Once they are gone, the slots come back: the next scrape is answered.
    deadline = time.monotonic() + IDLE_TIMEOUT_S + 10
    while True:
        try:
            assert healthz(server.port) == 200
            break
        except OSError:
            assert time.monotonic() < deadline, "the server did not recover its connection slots"
            time.sleep(0.1)


def test_a_burst_of_200_scrapers_is_answered_whole(server: Endpoints) -> None:
    def scrape(_n: int) -> int:
        return sum(healthz(server.port) == 200 for _ in range(10))

    with ThreadPoolExecutor(max_workers=200) as pool:
        assert sum(pool.map(scrape, range(200))) == 2000


def test_an_empty_metrics_host_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_METRICS_HOST", "")
    with pytest.raises(ConfigError, match="metrics_host: empty"):
        load_settings()
