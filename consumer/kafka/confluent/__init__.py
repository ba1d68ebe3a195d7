"""The confluent-kafka (librdkafka) backend, ``backend = "confluent"`` (the optional
``[librdkafka]`` extra): the service's adapter (``adapter``), the option rules checked
when the configuration loads (``options``, importable without confluent-kafka),
DurableProducer's transport (``transport``) and the two calls both make (``calls``).
Reached through consumer.kafka.backends; needs no kafka-python."""
