"""The service's HTTP endpoints (``metrics_port``): ``/metrics`` (Prometheus text format),
``/healthz`` (liveness) and ``/readyz`` (readiness), each answering JSON with the reason
when not OK (HTTP 503); and the query API's ``/v1/...`` routes (consumer.serving.api).

* live: the poll loop has turned within ``stall_s`` and the WAL writer has not failed;
* ready: the WAL is open, the broker answered the last poll, and the instance is a member
  of the group (partitions assigned since it last lost them, or an assignment of none).

The service thread writes the state (plain attribute stores); the server's thread only
reads it: no lock is needed for these single values.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumer.serving.api import MAX_BODY, QueryApi, encode

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256
LISTEN_BACKLOG = 512
MAX_HEADER_BYTES = 16 * 1024


class Health:
    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.loop_turned = time.monotonic()
        self.wal_open = False
        self.wal_failed: str | None = None
        self.broker_answered = False
        self.member = False

    def live(self) -> tuple[bool, str]:
        if self.wal_failed is not None:
            return False, f"the WAL writer failed: {self.wal_failed}"
        quiet = time.monotonic() - self.loop_turned
        if quiet > self.stall_s:
            return False, f"the poll loop has not turned for {quiet:.0f} s (bound {self.stall_s:.0f} s)"
        return True, "the poll loop is turning"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        checks = [
            (live, why),
            (self.wal_open, "the WAL is not open"),
            (self.broker_answered, "the broker has not answered yet"),
            (self.member, "not a member of the consumer group yet"),
        ]
        for ok, reason in checks:
            if not ok:
                return False, reason
        return True, "WAL open, broker reachable, member of the group"


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them: past that a new connection
    is closed at once (its client retries), so no flood of idle or half-open connections
    can take the process's memory or threads. A listen backlog for bursts of scrapers."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that broke the protocol (an over-long request line, a reset): its
        # connection is closed; no traceback on the service's log for what a client sent.
        log.debug("HTTP connection from %s dropped", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _HeaderBudget:
    """The request's input stream, with the header section (request line and headers) cut
    at MAX_HEADER_BYTES: http.server alone lets 100 headers of 64 KiB each through."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.left = MAX_HEADER_BYTES

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._stream.readline(min(limit, self.left + 1) if limit >= 0 else self.left + 1)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong(f"header section over {MAX_HEADER_BYTES} bytes")
        return line

    def __getattr__(self, name: str) -> Any:  # read(), the body's, and the rest: the stream's own
        return getattr(self._stream, name)


SHUTDOWN_POLL_S = 0.02
WRITE_BUFFER = 32 << 10  # bytes: a top-1000 answer with its headers goes out in one write


class Endpoints:
    """A small HTTP server on its own daemon thread."""

    def __init__(self, host: str, port: int, health: Health, registry: CollectorRegistry, api: QueryApi) -> None:
        handler = _handler(health, registry, api)
        self._server = _BoundedServer((host, port), handler)
        self.port = self._server.server_address[1]
        # serve_forever notices shutdown() only between polls: at its default 0.5 s every
        # stop of the service (and every test store) paid up to half a second for nothing.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SHUTDOWN_POLL_S,), name="tidal-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(health: Health, registry: CollectorRegistry, api: QueryApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive: a query client (SignalClient, a scraper) reuses its connection, saving a
        # TCP handshake and a server thread per request; an idle one is closed after `timeout`.
        protocol_version = "HTTP/1.1"
        timeout = IDLE_TIMEOUT_S  # also bounds a request that never finishes arriving
        # An answer's headers and body go out in one write (the buffer, flushed by
        # http.server after each request): one segment, one wake-up of the client. A longer
        # body goes out in several; without TCP_NODELAY each would wait for the client's
        # delayed ACK of the last (40 ms) on a kept-alive connection.
        wbufsize = WRITE_BUFFER
        disable_nagle_algorithm = True

        def handle_one_request(self) -> None:
            budget = self.rfile if isinstance(self.rfile, _HeaderBudget) else _HeaderBudget(self.rfile)
            budget.left = MAX_HEADER_BYTES  # each request of a kept-alive connection has its own
            self.rfile = budget  # type: ignore[assignment]  # the server reads it only through readline and read
            super().handle_one_request()

        def do_GET(self) -> None:
            if api.handles(self.path):
                self._json(*api.get(self.path))
            elif self.path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                ok, reason = health.live() if self.path == "/healthz" else health.ready()
                body = json.dumps({"ok": ok, "reason": reason}).encode()
                self._answer(200 if ok else 503, body, "application/json")
            else:
                self._answer(404, b'{"ok": false, "reason": "not found"}', "application/json")

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "")
            if not api.handles(self.path):
                self._json(404, {"error": f"no route POST {self.path}"})
            elif not length.isdigit() or int(length) > MAX_BODY:
                self.close_connection = True  # the body was not read: the stream is out of step
                self._json(
                    413 if length.isdigit() else 411,
                    {"error": f"a body of at most {MAX_BODY} bytes, with its Content-Length"},
                )
            else:
                self._json(*api.post(self.path, self.rfile.read(int(length))))

        def _json(self, status: int, answer: dict[str, Any]) -> None:
            try:
                body = encode(answer)
            except ValueError:
                status, body = 500, encode({"error": "a figure of this answer is not finite (a sum overflowed)"})
            self._answer(status, body, "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # scrapes are not worth a log line each
            return

    return Handler
