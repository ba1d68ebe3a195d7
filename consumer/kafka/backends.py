"""Which Kafka client library backs an adapter (consumer.kafka.adapter): the one place the
``backend`` setting is dispatched for the service and ``tidal-consumer status``. Each
library is imported only when chosen (confluent-kafka is an optional extra)."""

from __future__ import annotations

from consumer.config import Settings
from consumer.kafka.adapter import KafkaAdapter


def connect(settings: Settings, *, client_id: str, group_instance_id: str | None) -> KafkaAdapter:
    """The adapter of ``settings.backend`` (its group consumer joins nothing until it
    subscribes). Raises KafkaUnavailable, KafkaRefused or KafkaOptionInvalid."""
    if settings.backend == "confluent":
        from consumer.kafka.confluent import ConfluentAdapter  # noqa: PLC0415 - the optional librdkafka extra

        return ConfluentAdapter.connect(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=settings.group_id,
            group_instance_id=group_instance_id,
            client_id=client_id,
            consumer_options=settings.kafka.for_consumer(),
            producer_options=settings.kafka.for_producer(),
            refusal_grace_s=settings.kafka_refused_exit_s,
        )
    from consumer.kafka.kafka_python import KafkaPythonAdapter  # noqa: PLC0415 - only this backend needs kafka-python

    return KafkaPythonAdapter.connect(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        group_instance_id=group_instance_id,
        client_id=client_id,
        max_poll_records=settings.max_poll_records,
        consumer_options=settings.kafka.for_consumer(),
        producer_options=settings.kafka.for_producer(),
        refusal_grace_s=settings.kafka_refused_exit_s,
    )
