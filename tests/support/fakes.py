"""Fakes for the pieces the commit step and the service loop talk to (no broker)."""

from __future__ import annotations


class Send:
    """A delivery the test settles by hand, or that the fake's flush settles."""

    def __init__(self, position: tuple[int, int] = (0, 0)) -> None:
        self._done = False
        self._error: BaseException | None = None
        self._position = position

    def settle(self, error: BaseException | None = None) -> None:
        self._done, self._error = True, error

    def done(self) -> bool:
        return self._done

    def error(self) -> BaseException | None:
        return self._error

    def position(self) -> tuple[int, int] | None:
        return self._position if self._done and self._error is None else None
