"""The Futures walcore hands out (``Wal.append``, ``submit_batch``): a
concurrent.futures.Future, cheap to create and to wait on.

At 100,000 appends a second a Future's construction is a large share of the work, and
most of it is not the constructor's own time but the cyclic garbage collector's: every
container object allocated counts towards the next collection, and the objects of
every future still pending are traversed again by each full collection. Profiling
eight appending threads put 38% of all CPU in the stdlib ``Future.__init__`` (its
``threading.Condition`` is Python code binding its lock's methods one by one), and
disabling the collector more than doubled throughput. So ``AppendFuture`` allocates
as few containers as the stdlib protocol allows:

* its ``_condition`` is a ``LeanCondition``: a C-level RLock (``with``, ``acquire`` and
  ``release`` run at C speed) that also offers the ``wait``/``notify_all`` Future uses,
  and makes its list of waiting threads only when a thread actually waits;
* it carries its own record to the writer thread, so a single append needs no other
  envelope object on the queue.

Everything else is the stdlib Future's own code and fields; tests/walcore/test_future.py
fails loudly if a Python release changes those fields.
"""

from __future__ import annotations

import contextlib
from _thread import RLock, allocate_lock
from concurrent.futures import Future
from concurrent.futures._base import FINISHED, PENDING
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from walcore.records import EventRecord


class LeanCondition(RLock):  # type: ignore[misc]  # the C RLock, subclassed for its speed
    """threading.Condition over its own RLock, as far as Future uses it."""

    __slots__ = ("_notify",)  # locks of the threads waiting; set on the first wait
    _notify: list[Any]

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, block until notified or timed out, retake it."""
        waiter = allocate_lock()
        waiter.acquire()
        try:
            self._notify.append(waiter)
        except AttributeError:
            self._notify = [waiter]
        saved = self._release_save()  # type: ignore[attr-defined]  # the C RLock has it; its stub does not
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
            self._acquire_restore(saved)  # type: ignore[attr-defined]  # as _release_save
            if not notified:
                # ValueError: notified between the timeout and retaking the lock
                with contextlib.suppress(ValueError):
                    self._notify.remove(waiter)

    def notify_all(self) -> None:
        try:
            waiters = self._notify
        except AttributeError:
            return  # nobody ever waited
        self._notify = []
        for waiter in waiters:
            waiter.release()


class AppendFuture(Future):  # type: ignore[type-arg]
    def __init__(self, record: EventRecord | None = None) -> None:
        """``record``: a single append's, carried to the writer thread; None for a batch."""
        # The stdlib's fields, with the lean condition.
        self._condition = LeanCondition()  # type: ignore[assignment]  # a Condition as far as Future uses one
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []  # type: ignore[var-annotated]
        self.record = record  # what the writer thread is to append

    def result(self, timeout: float | None = None) -> Any:
        # Most futures are done by the time they are asked (a group commit resolves
        # thousands at once): answer those without taking the lock. set_result writes
        # _result before _state, so a FINISHED state is never seen with a stale result.
        if self._state == FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)
