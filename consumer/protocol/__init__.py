"""The wire protocol and shared types, pure: signal events, acks, dead letters, commit
marks and the handoff's reading of them. Imports no WAL writer and no Kafka client."""
