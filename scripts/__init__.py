"""Command-line helpers run from the repository (`make kafka-up`, `make demo`); the tests
import the broker helper as scripts.kafka_local."""
