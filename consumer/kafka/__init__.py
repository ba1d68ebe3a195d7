"""The Kafka client layer: the adapter protocol the service speaks, one module per client
library (kafka-python, librdkafka through confluent-kafka), the backend dispatch, option
tables, the default partitioner, and DurableProducer's links."""
