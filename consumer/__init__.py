"""tidal-consumer: the Kafka service built on walcore (see docs/operations.md)."""
