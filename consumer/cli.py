"""``tidal-consumer run``: the service's command line (flags override env and file)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict, Unpack

from consumer.errors import ExitCode

USAGE = 2  # a command line that is not one (argparse's own exit code)
# Record attributes a log call may carry (``extra=``) that the JSON format includes.
STRUCTURED_FIELDS = ("topic", "partition", "offset", "seq", "wal_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in STRUCTURED_FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class Hooks(TypedDict, total=False):
    """A test's crash points (tests/support/hooked_service.py), passed to the Service."""

    after_fsync: Callable[[int], None]
    before_commit: Callable[[int], None]


def main(argv: list[str] | None = None, stop: threading.Event | None = None, **hooks: Unpack[Hooks]) -> int:
    """``stop``: set by a signal that arrived before this (consumer.launch installs the
    first handlers). ``hooks``: a test's crash points (``after_fsync``, ``before_commit``:
    see tests/support/hooked_service.py), passed to the Service."""
    # First of all: a SIGTERM during start-up (config, imports, WAL recovery, broker
    # connect) must stop the service cleanly, not kill it with the default handler.
    stop = stop or threading.Event()
    log = logging.getLogger("consumer.cli")

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    parser = argparse.ArgumentParser(prog="tidal-consumer", description="Make Kafka signal events durable.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="consume, make durable, ack, commit (until SIGTERM/SIGINT)")
    run.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("TIDAL_CONFIG"),
        help="TOML file (default: $TIDAL_CONFIG; see config/consumer.toml)",
    )
    run.add_argument("--bootstrap-servers", metavar="HOST:PORT[,HOST:PORT]")
    run.add_argument("--topic", dest="topics", action="append", metavar="NAME", help="repeat for several")
    run.add_argument("--group-id")
    run.add_argument("--reply-topic")
    run.add_argument("--dlq-topic")
    run.add_argument("--wal-dir", type=Path)
    run.add_argument("--log-level", default=os.environ.get("TIDAL_LOG_LEVEL", "INFO"))
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("TIDAL_LOG_FORMAT", "text"),
        help="json: one object per line (ts, level, logger, message, and topic/partition/offset/seq where they apply)",
    )
    status = sub.add_parser("status", help="per partition: committed offset, end offset, lag; the WAL's last seq")
    status.add_argument("--config", type=Path, default=os.environ.get("TIDAL_CONFIG"))
    status.add_argument("--bootstrap-servers", metavar="HOST:PORT[,HOST:PORT]")
    status.add_argument("--topic", dest="topics", action="append", metavar="NAME")
    status.add_argument("--group-id")
    status.add_argument("--wal-dir", type=Path)
    status.add_argument("--json", action="store_true")
    query = sub.add_parser(
        "query",
        help="an entity's decayed scores, window counts and velocity, or the top k "
        "entities of a signal type: from the local store, or the whole group",
    )
    what = query.add_mutually_exclusive_group(required=True)
    what.add_argument("--entity", metavar="ID", help="an entity id (0 to 2**64-1)")
    what.add_argument("--top", metavar="K", help="the K highest scores of --signal (1 to 10000)")
    query.add_argument("--signal", metavar="TYPE", help="with --top: the signal type's name")
    query.add_argument(
        "--at", metavar="TIME", help="RFC 3339 (2026-11-25T12:00:00Z) or epoch nanoseconds; default: now"
    )
    query.add_argument(
        "--peers",
        metavar="HOST:PORT[,HOST:PORT]",
        help="ask every instance's query API (their metrics_port) and merge: the group's answer",
    )
    query.add_argument(
        "--peers-dns",
        metavar="NAME:PORT",
        help="as --peers, every address NAME resolves to (a Kubernetes headless service)",
    )
    query.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="WAL_ID:SEQ",
        help="read your writes: the store of WAL_ID answers once it has applied SEQ (repeatable)",
    )
    query.add_argument("--config", type=Path, default=os.environ.get("TIDAL_CONFIG"))
    query.add_argument("--wal-dir", type=Path)
    query.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command in ("status", "query"):
        # One-shot commands: Ctrl-C or a SIGTERM ends them at once, quietly, as any command.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if stop.is_set():
            return ExitCode.OK
        return _status(args) if args.command == "status" else _query(args)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    # Imported only now, with the signal handlers in place (pydantic's import takes a while).
    from consumer.config import ConfigError, load_settings  # noqa: PLC0415

    # kafka-python and librdkafka log every failed connect at ERROR; the service logs the
    # outage itself (one line per retry, or per 15 s with librdkafka).
    for client_log in ("kafka", "librdkafka"):
        logging.getLogger(client_log).setLevel(os.environ.get("TIDAL_KAFKA_LOG_LEVEL", "CRITICAL").upper())
    try:
        settings = load_settings(
            args.config,
            bootstrap_servers=args.bootstrap_servers,
            topics=args.topics,
            group_id=args.group_id,
            reply_topic=args.reply_topic,
            dlq_topic=args.dlq_topic,
            wal_dir=args.wal_dir,
        )
    except ConfigError as exc:
        print(f"tidal-consumer: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    if stop.is_set():
        return ExitCode.OK

    from consumer.service import Service  # noqa: PLC0415 - config errors should not wait for kafka imports

    # Every file the service (and its applier, which inherits this) creates is owner-only,
    # as the WAL's: the store, its query reader's files, COMMITTED.json.
    os.umask(0o077)

    return Service(settings, stop=stop, **hooks).run()


def _status(args: argparse.Namespace) -> int:
    from consumer.config import ConfigError, load_settings  # noqa: PLC0415
    from consumer.ops.status import gather, render  # noqa: PLC0415 - kafka only for this command
    from walcore import WalCorruption  # noqa: PLC0415

    def gathered() -> dict[str, Any]:
        return gather(
            load_settings(
                args.config,
                bootstrap_servers=args.bootstrap_servers,
                topics=args.topics,
                group_id=args.group_id,
                wal_dir=args.wal_dir,
            )
        )

    # Exception last: kafka-python's errors, one line rather than a traceback.
    return _answer(
        gathered,
        render,
        args.json,
        [
            (ConfigError, ExitCode.CONFIG, ""),
            (WalCorruption, ExitCode.WAL_FATAL, ""),
            (Exception, ExitCode.KAFKA, "cannot read the group's status: "),
        ],
    )


def _query(args: argparse.Namespace) -> int:
    from consumer.config import ConfigError, load_settings  # noqa: PLC0415
    from consumer.serving import params  # noqa: PLC0415
    from consumer.serving.client import PeerError, SignalClient  # noqa: PLC0415
    from consumer.store.query import QueryError, UnknownSignal, group, local, render  # noqa: PLC0415 - RocksDB only here

    try:
        entity = None if args.entity is None else params.entity_id(args.entity, "--entity")
        top = None if args.top is None else params.top_k(args.top, "--top")
        if top is not None and not args.signal:
            raise params.BadQuery("--top needs --signal (a signal type's name)")
        at_ns = params.time_ns(args.at, "--at")
        after = [str(params.after(token, "--after")) for token in args.after]
        if after and not (args.peers or args.peers_dns):
            raise params.BadQuery("--after needs --peers or --peers-dns (a read-your-writes wait is the service's)")
    except params.BadQuery as exc:
        print(f"tidal-consumer: {exc}", file=sys.stderr)
        return USAGE
    if args.peers or args.peers_dns:
        peers = [peer for peer in (args.peers or "").split(",") if peer]

        def merged() -> dict[str, Any]:
            with SignalClient(peers, peers_dns=args.peers_dns) as client:
                return group(client, entity=entity, top=top, signal=args.signal, at_ns=at_ns, after=after).to_json()

        return _answer(
            merged,
            render,
            args.json,
            [(PeerError, ExitCode.PARTIAL, "")],
            lambda found: ExitCode.OK if found["complete"] else ExitCode.PARTIAL,
        )
    return _answer(
        lambda: local(
            load_settings(args.config, wal_dir=args.wal_dir), entity=entity, top=top, signal=args.signal, at_ns=at_ns
        ),
        render,
        args.json,
        [(ConfigError, ExitCode.CONFIG, ""), (UnknownSignal, USAGE, ""), (QueryError, ExitCode.STORE, "")],
    )


def _answer(
    find: Callable[[], Any],
    render: Callable[[Any], str],
    as_json: bool,
    failures: list[tuple[type[BaseException], int, str]],
    code_of: Callable[[Any], int] = lambda _found: ExitCode.OK,
) -> int:
    """A one-shot command: print what ``find`` returns (JSON or text) and exit
    ``code_of(it)``, or one line for the first of ``failures`` the error is, with its exit
    code."""
    try:
        found = find()
    except tuple(kind for kind, _, _ in failures) as exc:
        code, prefix = next((code, prefix) for kind, code, prefix in failures if isinstance(exc, kind))
        print(f"tidal-consumer: {prefix}{exc}", file=sys.stderr)
        return code
    print(json.dumps(found) if as_json else render(found))
    return code_of(found)


if __name__ == "__main__":
    sys.exit(main())
