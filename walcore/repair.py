"""Cutting a torn tail (found by ``walcore.scan``) off the last segment, durably, keeping
the cut bytes: nothing vanishes without a trace (after etcd's ``repair.go``, which does
not fsync its copy; this does, and the directory too)."""

from __future__ import annotations

import os
from pathlib import Path

from walcore.files import atomic_write, fsync_dir
from walcore.scan import TornTail


def cut_torn_tail(torn: TornTail) -> Path:
    """Keep a copy of the torn bytes, then cut them off durably. Returns the copy's path."""
    with torn.path.open("rb") as handle:
        handle.seek(torn.offset)
        tail = handle.read()
    keep_name = f"{torn.path.name}.broken-{torn.offset}"
    atomic_write(torn.path.parent, keep_name, tail)
    fd = os.open(torn.path, os.O_WRONLY)
    try:
        os.ftruncate(fd, torn.offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(torn.path.parent)
    return torn.path.parent / keep_name
