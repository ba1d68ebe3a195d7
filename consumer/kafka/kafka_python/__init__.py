"""The kafka-python backend (the default): the service's adapter (``adapter``), the option
rules checked when the configuration loads (``options``), and DurableProducer's
transport (``transport``). Reached through consumer.kafka.backends."""
