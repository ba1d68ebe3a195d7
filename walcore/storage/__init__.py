"""The storage layer (the seed's third): WAL events applied into a keyed store.

``StorageEngine`` (engine.py) is the interface, with an in-memory backend for tests and
RocksDB (rocks.py) on disk; ``keys`` encodes ``[entity][0x00][tag][suffix]``;
``signals`` is the aggregate math; ``SignalStore`` (store.py) applies events atomically
with the applied seq and answers queries. No Kafka import here: the service's applier
(consumer/store/applier.py) feeds it. Layout: docs/store-format.md.
"""

from walcore.storage.engine import KEYSPACES, MemoryEngine, StorageEngine, WriteBatch
from walcore.storage.store import SignalStore, SignalSummary, StoreMismatch

__all__ = ["KEYSPACES", "MemoryEngine", "SignalStore", "SignalSummary", "StorageEngine", "StoreMismatch", "WriteBatch"]
