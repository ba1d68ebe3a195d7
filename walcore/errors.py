"""Typed errors: each carries what a user needs to act (file, byte offset, field)."""

from __future__ import annotations

from pathlib import Path


class WalError(Exception):
    """Base class of every error walcore raises on purpose."""


class WalCorruption(WalError):
    """Damage the WAL will not repair by itself: it names the file and byte offset.

    Raised for anything but a torn tail of the last segment (which is cut on open).
    """

    def __init__(self, file: Path | str, offset: int, reason: str) -> None:
        self.file = Path(file)
        self.offset = offset
        self.reason = reason
        super().__init__(f"WAL corruption in {self.file} at byte {offset}: {reason}")


class InvalidRecord(WalError, ValueError):
    """A record field is out of range; raised before anything is written."""

    def __init__(self, field: str, value: object, rule: str, index: int | None = None) -> None:
        self.field = field
        self.value = value
        self.index = index
        where = "" if index is None else f" (record {index} of the batch)"
        super().__init__(f"invalid {field}={value!r}{where}: {rule}")


class WalLocked(WalError):
    """Another process (or another Wal object) holds the directory's lock."""


class WalClosed(WalError):
    """The WAL was closed; open it again to append."""


class WalFailed(WalError):
    """A write or fsync failed. Nothing in the failed batch is durable and the WAL
    refuses further appends: an fsync is never retried on the same file (after a
    failed fsync the kernel may have dropped the dirty pages). Reopen to recover."""
