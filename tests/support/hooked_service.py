"""`tidal-consumer` with a test's fault injected, run by the tests as a real process.

Production code reads no test switch from its environment; this wrapper does, and
passes the fault in through the service's own injection points:

  TIDAL_TEST_CRASH_AFTER_FSYNC=N  SIGKILL itself right after the N-th batch is durable,
                                  before its acks and commit (Service's after_fsync hook)
  TIDAL_TEST_CRASH_BEFORE_COMMIT=N  SIGKILL itself once the N-th batch's acks are all
                                  delivered, before its offsets are committed; a poll
                                  staged behind it is made durable first (awaited), so
                                  the WAL then also holds a batch whose acks were never sent
  TIDAL_TEST_PAUSE_AFTER_FSYNC=N  SIGSTOP itself right after the N-th batch is durable, before
                                  its acks and commit: a paused instance (a frozen VM, a
                                  stopped container) holding a batch; SIGCONT resumes it
  TIDAL_TEST_FSYNC_EIO=1          every fdatasync fails with EIO (a failing disk); each
                                  attempt is logged, so a test can count them
  TIDAL_TEST_HIDE_MODULES=a,b     these modules cannot be imported (a codec library missing)

Usage: python tests/support/hooked_service.py run --bootstrap-servers ... (the CLI's arguments)
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable

for hidden in filter(None, os.environ.get("TIDAL_TEST_HIDE_MODULES", "").split(",")):
    sys.modules[hidden] = None  # type: ignore[assignment]  # import raises ImportError

from consumer.cli import main  # noqa: E402
from consumer.ingest.steps import BatchSteps, Staged  # noqa: E402

_newest: list[Staged] = []  # the poll staged last (its acks are sent when the next turn completes it)


def _remember(stage: Callable[..., Staged]) -> Callable[..., Staged]:
    def staging(*args: object, **kwargs: object) -> Staged:
        staged = stage(*args, **kwargs)
        _newest[:] = [staged]
        return staged

    return staging


def signal_after(batch: int, signum: signal.Signals, *, await_staged: bool = False) -> Callable[[int], None]:
    def hook(completed: int) -> None:
        if completed == batch:
            if await_staged and _newest:
                with contextlib.suppress(Exception):  # a failed WAL stores nothing more: kill all the same
                    _newest[0].durable.result(timeout=30)
            print(f"hooked_service: {signum.name} to itself after batch {batch}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signum)

    return hook


def failing_fdatasync(fd: int) -> None:
    print(f"injected EIO on fdatasync(fd={fd})", file=sys.stderr, flush=True)
    raise OSError(errno.EIO, "Input/output error (injected)")


if __name__ == "__main__":
    hooks = {
        hook: signal_after(int(os.environ[variable]), signum, await_staged=hook == "before_commit")
        for hook, variable, signum in (
            ("after_fsync", "TIDAL_TEST_CRASH_AFTER_FSYNC", signal.SIGKILL),
            ("after_fsync", "TIDAL_TEST_PAUSE_AFTER_FSYNC", signal.SIGSTOP),
            ("before_commit", "TIDAL_TEST_CRASH_BEFORE_COMMIT", signal.SIGKILL),
        )
        if os.environ.get(variable)
    }
    BatchSteps.stage = _remember(BatchSteps.stage)  # type: ignore[method-assign]
    if os.environ.get("TIDAL_TEST_FSYNC_EIO"):
        os.fdatasync = failing_fdatasync
    sys.exit(main(sys.argv[1:], **hooks))
