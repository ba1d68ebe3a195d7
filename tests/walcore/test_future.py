"""AppendFuture behaves as the stdlib Future it stands in for."""

from __future__ import annotations

import threading
from concurrent.futures import Future, TimeoutError, as_completed, wait

import pytest

from walcore.future import AppendFuture


def test_has_exactly_the_stdlib_futures_fields_plus_its_record() -> None:
    # If a Python release adds or renames a field in Future.__init__, this fails first.
    assert set(vars(AppendFuture())) == set(vars(Future())) | {"record"}


def test_result_waits_for_another_thread_and_times_out_when_nobody_answers() -> None:
    future = AppendFuture()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)
    started = threading.Event()

    def answer() -> None:
        started.wait()
        future.set_result(42)

    thread = threading.Thread(target=answer)
    thread.start()
    started.set()
    assert future.result(timeout=10) == 42
    thread.join()


def test_many_waiters_are_all_woken_and_callbacks_run() -> None:
    future = AppendFuture()
    seen: list[object] = []
    future.add_done_callback(lambda f: seen.append(f.exception()))
    results: list[BaseException | None] = []
    waiters = [threading.Thread(target=lambda: results.append(future.exception(timeout=10))) for _ in range(5)]
    for waiter in waiters:
        waiter.start()
    error = OSError("boom")
    future.set_exception(error)
    for waiter in waiters:
        waiter.join()
    assert results == [error] * 5 and seen == [error]
    with pytest.raises(OSError, match="boom"):
        future.result(timeout=0)  # the done-without-lock path must not mistake an error for a result


def test_works_with_wait_and_as_completed() -> None:
    futures = [AppendFuture() for _ in range(3)]
    for i, future in enumerate(futures):
        future.set_result(i)
    done, pending = wait(futures, timeout=1)
    assert len(done) == 3 and not pending
    assert sorted(f.result() for f in as_completed(futures, timeout=1)) == [0, 1, 2]
