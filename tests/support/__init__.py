"""Helpers the tests share: fixtures, a service process, WAL builders. Imported as
``tests.support.*``; no test module imports another."""
