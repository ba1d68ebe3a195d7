"""``tidal-consumer run``: the service's command line (flags override env and file)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from consumer.errors import ExitCode


def main(argv: list[str] | None = None, **hooks: Callable[[int], None]) -> int:
    """``hooks``: a test's crash points (``after_fsync``, ``before_commit``: see
    tests/hooked_service.py), passed to the Service."""
    # First of all: a SIGTERM during start-up (config, imports, WAL recovery, broker
    # connect) must stop the service cleanly, not kill it with the default handler.
    stop = threading.Event()
    log = logging.getLogger("consumer.cli")

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    parser = argparse.ArgumentParser(prog="tidal-consumer", description="Make Kafka signal events durable.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="consume, make durable, ack, commit (until SIGTERM/SIGINT)")
    run.add_argument("--config", type=Path, default=os.environ.get("TIDAL_CONFIG"),
                     help="TOML file (default: $TIDAL_CONFIG; see config/consumer.toml)")
    run.add_argument("--bootstrap-servers", metavar="HOST:PORT[,HOST:PORT]")
    run.add_argument("--topic", dest="topics", action="append", metavar="NAME", help="repeat for several")
    run.add_argument("--group-id")
    run.add_argument("--reply-topic")
    run.add_argument("--dlq-topic")
    run.add_argument("--wal-dir", type=Path)
    run.add_argument("--log-level", default=os.environ.get("TIDAL_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported only now, with the signal handlers in place (pydantic's import takes a while).
    from consumer.config import ConfigError, load_settings  # noqa: PLC0415
    # kafka-python logs every failed connect at ERROR; the service logs one line per retry itself.
    logging.getLogger("kafka").setLevel(os.environ.get("TIDAL_KAFKA_LOG_LEVEL", "CRITICAL").upper())
    try:
        settings = load_settings(args.config, bootstrap_servers=args.bootstrap_servers, topics=args.topics,
                                 group_id=args.group_id, reply_topic=args.reply_topic,
                                 dlq_topic=args.dlq_topic, wal_dir=args.wal_dir)
    except ConfigError as exc:
        print(f"tidal-consumer: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    if stop.is_set():
        return ExitCode.OK

    from consumer.service import Service  # noqa: PLC0415 - config errors should not wait for kafka imports

    return Service(settings, stop=stop, **hooks).run()


if __name__ == "__main__":
    sys.exit(main())
