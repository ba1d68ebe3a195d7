"""The `topics` fixture for the service and client tests (defined in tests/consumer_fixtures.py)."""

from consumer_fixtures import topics

__all__ = ["topics"]
