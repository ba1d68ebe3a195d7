"""Serving: the signal store read over the network, one store or the whole group.

* ``params``  the query inputs (entity ids, times, k, read-your-writes tokens): parsed and
              checked once, for the HTTP API and the CLI alike; pure
* ``answers`` what a store answers, and how answers of several stores add up; pure
* ``reader``  the service's read view of its store (a RocksDB secondary that follows the
              applier), answering as of a seq it has applied
* ``api``     the ``/v1/...`` routes of the service's HTTP server
* ``client``  ``SignalClient``: every instance asked, answers merged into the exact
              group-wide one (top-k by a threshold algorithm), ``complete`` said plainly

docs/operations.md ("Serving queries") has the contract.
"""

from consumer.serving.client import GroupAnswer, PeerError, SignalClient

__all__ = ["GroupAnswer", "PeerError", "SignalClient"]
