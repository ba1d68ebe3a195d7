"""A concurrent.futures.Future that is cheap to create.

Each ``Wal.append`` returns a Future, so at 100,000 appends a second its construction
matters: the stdlib's ``threading.Condition()`` is Python code that binds its lock's
methods one by one, and profiling eight appending threads put 28% of all CPU in
``Condition.__init__`` (38% with the rest of ``Future.__init__``). ``AppendFuture`` is
the stdlib Future with one change: its ``_condition`` is ``LeanCondition``, which keeps
the protocol Future uses (``with``, ``acquire``/``release``, ``wait``, ``notify_all``)
over one C-level RLock, and makes a waiter lock only when someone actually waits.
tests/walcore/test_future.py fails loudly if a Python release changes Future's fields.
"""

from __future__ import annotations

import contextlib
from _thread import RLock, allocate_lock
from concurrent.futures import Future
from concurrent.futures._base import PENDING
from typing import Any


class LeanCondition:
    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = RLock()
        self._waiters: list[Any] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """threading.Condition.wait: release the lock, block until notified or timed out, retake it."""
        waiter = allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        saved = self._lock._release_save()  # type: ignore[attr-defined]
        notified = False
        try:
            if timeout is None:
                notified = waiter.acquire()
            elif timeout > 0:
                notified = waiter.acquire(True, timeout)
            else:
                notified = waiter.acquire(False)
            return notified
        finally:
            self._lock._acquire_restore(saved)  # type: ignore[attr-defined]
            if not notified:
                # ValueError: notified between the timeout and retaking the lock
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def notify_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.release()


class AppendFuture(Future):  # type: ignore[type-arg]
    def __init__(self) -> None:  # the stdlib's fields, with the lean condition
        self._condition = LeanCondition()  # type: ignore[assignment]
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []  # type: ignore[var-annotated]
        self._done_callbacks = []  # type: ignore[var-annotated]
