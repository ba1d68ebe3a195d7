"""Query inputs, parsed and checked once (the HTTP API and the CLI share them). Pure.

Every bad value raises ``BadQuery`` with a message naming the parameter and the rule,
which the API answers as HTTP 400 and the CLI prints as one line (exit 2).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

U64_MAX = 2**64 - 1
MAX_K = 10_000
MAX_SCORED = 10_000  # entities one /v1/scores request may ask for
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TOKEN = re.compile(r"([A-Za-z0-9._-]{1,64}):([0-9]{1,20})")


class BadQuery(ValueError):
    """A query parameter is not valid; the message names it."""


class After(NamedTuple):
    """A read-your-writes token: answer only once WAL ``wal_id``'s store has applied ``seq``
    (an ack's (wal_id, seq), a DurableResult's)."""

    wal_id: str
    seq: int

    def __str__(self) -> str:
        return f"{self.wal_id}:{self.seq}"


def entity_id(text: str, name: str = "entity") -> int:
    if not text.isdigit() or int(text) > U64_MAX:
        raise BadQuery(f"{name} {text!r}: an entity id is an integer from 0 to 2**64-1")
    return int(text)


def time_ns(text: str | None, name: str = "at") -> int | None:
    """RFC 3339 / ISO 8601 (a naive time is UTC) or epoch nanoseconds, to epoch nanoseconds;
    None stays None (the server's now). Times before 1970 or past 2**64-1 ns (2554) are
    refused: event timestamps are u64 nanoseconds."""
    if text is None:
        return None
    if text.isdigit():
        value = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadQuery(
                f"{name} {text!r}: not an RFC 3339 time (2026-11-25T12:00:00Z) or epoch nanoseconds"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        value = (moment - _EPOCH) // timedelta(microseconds=1) * 1000
    if not 0 <= value <= U64_MAX:
        raise BadQuery(f"{name} {text!r}: outside the event time range (1970-01-01 to 2**64-1 ns, in 2554)")
    return value


def top_k(text: str | None, name: str = "k") -> int:
    if text is None or not text.isdigit() or not 1 <= int(text) <= MAX_K:
        raise BadQuery(f"{name} {text!r}: an integer from 1 to {MAX_K}")
    return int(text)


def score(text: str, name: str = "min_score") -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadQuery(f"{name} {text!r}: not a number") from None
    if not math.isfinite(value):
        raise BadQuery(f"{name} {text!r}: not a finite number")
    return value


def after(text: str, name: str = "after") -> After:
    match = _TOKEN.fullmatch(text)
    if match is None or not 1 <= int(match[2]) <= U64_MAX:
        raise BadQuery(
            f"{name} {text!r}: a read-your-writes token is <wal_id>:<seq> (an ack's), e.g. 9a3c7eaaafdf4ad0:1234"
        )
    return After(match[1], int(match[2]))


def wait_s(text: str | None, default: float, name: str = "wait_ms") -> float:
    """How long an ``after=`` may wait, in seconds (given in ms, at most 60,000)."""
    if text is None:
        return default
    if not text.isdigit() or int(text) > 60_000:
        raise BadQuery(f"{name} {text!r}: milliseconds from 0 to 60000")
    return int(text) / 1000
