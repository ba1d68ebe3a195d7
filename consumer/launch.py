"""The ``tidal-consumer`` console script: the stop signals' handlers first, then the rest.

A SIGTERM or SIGINT must be a request to stop (drain, exit 0), never a kill, from the
earliest moment it can be: before argparse, logging and the command's own imports
(~20 ms here), not only once consumer.cli has been imported. Only Python's own start-up
(the interpreter and site, ~25 ms) runs before this module; a signal in that window
kills the process before it has opened anything (docs/operations.md, exit codes).
"""

from __future__ import annotations

import signal
import threading


def main() -> int:
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()  # consumer.cli installs its own handlers next, which also log

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    from consumer.cli import main as cli_main  # noqa: PLC0415 - imported only once the handlers are in

    return cli_main(stop=stop)
