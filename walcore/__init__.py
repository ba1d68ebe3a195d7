"""walcore: a crash-safe group-commit write-ahead log for signal events.

No Kafka here: sources are plain (topic, partition, offset) values. See
docs/wal-format.md for the bytes on disk and ARCHITECTURE invariants 1, 3-6.

The names below load on first use (PEP 562): a reader of the record types alone (the ack
protocol, DurableProducer) does not load the writer, its threads and its codecs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as the type checker sees them (re-exported)
    from walcore.errors import InvalidRecord as InvalidRecord
    from walcore.errors import WalClosed as WalClosed
    from walcore.errors import WalCorruption as WalCorruption
    from walcore.errors import WalError as WalError
    from walcore.errors import WalFailed as WalFailed
    from walcore.errors import WalLocked as WalLocked
    from walcore.records import AppendResult as AppendResult
    from walcore.records import EventRecord as EventRecord
    from walcore.records import SourcePosition as SourcePosition
    from walcore.wal import Wal as Wal
    from walcore.wal import WalConfig as WalConfig

_WHERE = {
    "AppendResult": "walcore.records",
    "EventRecord": "walcore.records",
    "SourcePosition": "walcore.records",
    "InvalidRecord": "walcore.errors",
    "WalClosed": "walcore.errors",
    "WalCorruption": "walcore.errors",
    "WalError": "walcore.errors",
    "WalFailed": "walcore.errors",
    "WalLocked": "walcore.errors",
    "Wal": "walcore.wal",
    "WalConfig": "walcore.wal",
}
__all__ = [
    "AppendResult",
    "EventRecord",
    "InvalidRecord",
    "SourcePosition",
    "Wal",
    "WalClosed",
    "WalConfig",
    "WalCorruption",
    "WalError",
    "WalFailed",
    "WalLocked",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'walcore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
