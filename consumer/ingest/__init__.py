"""The ingest path of one instance, poll to commit: the pure batch plan (``plan``), the
I/O of one batch (``steps``: dead letters, WAL, acks), the commit step (``commits``), and
what the instance does with the partitions it gains and holds (``ownership``: the handoff
checks and the orphan sweep). consumer.service wires them into the loop."""
