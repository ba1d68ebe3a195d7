"""walcore: a crash-safe group-commit write-ahead log for signal events.

No Kafka here: sources are plain (topic, partition, offset) values. See
docs/wal-format.md for the bytes on disk and ARCHITECTURE invariants 1, 3-6.
"""

from walcore.errors import InvalidRecord, WalClosed, WalCorruption, WalError, WalFailed, WalLocked
from walcore.records import AppendResult, EventRecord, SourcePosition
from walcore.wal import Wal, WalConfig

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
