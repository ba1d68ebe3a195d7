"""The Kafka client libraries the service and DurableProducer can run on, and the one place
a ``backend`` name is turned into code: the configuration's option check and request
limit, the service's and ``tidal-consumer status``'s adapter, DurableProducer's transport.

Each backend is a package, consumer.kafka.<backend> (``options``, ``adapter``,
``transport``), imported only when chosen: confluent-kafka is an optional extra, and the
confluent backend needs no kafka-python.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from consumer.kafka.adapter import Connection

if TYPE_CHECKING:
    from consumer.config import Settings
    from consumer.kafka.adapter import KafkaAdapter
    from consumer.kafka.transport import ProducerTransport


class Backend(NamedTuple):
    package: str  # consumer.kafka.<package>
    library: str  # the module the client library installs
    install: str  # what installs it
    adapter: str  # the class in <package>.adapter (its ``connect``)
    transport: str  # the class in <package>.transport
    fences: bool  # its transactions carry the group generation (KIP-447): delivery = "transactional"


BACKENDS: dict[str, Backend] = {
    "kafka-python": Backend(
        "kafka_python", "kafka", "pip install tidal-consumer", "KafkaPythonAdapter", "KafkaPythonTransport", False
    ),
    "confluent": Backend(
        "confluent",
        "confluent_kafka",
        "pip install 'tidal-consumer[librdkafka]'",
        "ConfluentAdapter",
        "ConfluentTransport",
        True,
    ),
}


def check(name: str) -> None:
    """ValueError naming what is wrong when ``name`` is no backend or its library is not
    installed (the message is the configuration error's, after the field name)."""
    if name not in BACKENDS:
        raise ValueError(f"{name!r} is not one of {', '.join(repr(known) for known in BACKENDS)}")
    backend = BACKENDS[name]
    if importlib.util.find_spec(backend.library) is None:
        raise ValueError(f"{name!r} needs the {backend.library} module: {backend.install}")


def _part(name: str, part: str) -> ModuleType:
    check(name)
    return importlib.import_module(f"consumer.kafka.{BACKENDS[name].package}.{part}")


def option_problems(name: str, common: dict[str, Any], consumer: dict[str, Any], producer: dict[str, Any]) -> list[str]:
    """What is wrong with the [kafka], [kafka.consumer] and [kafka.producer] tables for
    this backend, one line per option naming it (empty when nothing is)."""
    problems: list[str] = _part(name, "options").option_problems(common, consumer, producer)
    return problems


def request_limit(name: str, producer_options: dict[str, Any]) -> int:
    """The largest request this backend's producer sends with these options."""
    limit: int = _part(name, "options").request_limit(producer_options)
    return limit


def connect(
    settings: Settings, *, client_id: str, group_instance_id: str | None, transactional_id: str | None = None
) -> KafkaAdapter:
    """The adapter of ``settings.backend`` (its group consumer joins nothing until it
    subscribes); ``transactional_id``: each batch in a transaction of this producer id
    (delivery = "transactional"). Raises KafkaUnavailable, KafkaRefused or KafkaOptionInvalid."""
    how = Connection(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        group_instance_id=group_instance_id,
        client_id=client_id,
        max_poll_records=settings.max_poll_records,
        consumer_options=settings.kafka.for_consumer(),
        producer_options=settings.kafka.for_producer(),
        refusal_grace_s=settings.kafka_refused_exit_s,
        transactional_id=transactional_id,
    )
    adapter: KafkaAdapter = getattr(_part(settings.backend, "adapter"), BACKENDS[settings.backend].adapter).connect(how)
    return adapter


def open_transport(
    name: str, bootstrap_servers: str | list[str], reply_topic: str, options: dict[str, Any]
) -> ProducerTransport:
    """DurableProducer's transport on backend ``name`` (ValueError: unknown, not installed,
    options the library refuses, or no such reply topic)."""
    transport: ProducerTransport = getattr(_part(name, "transport"), BACKENDS[name].transport)(
        bootstrap_servers, reply_topic, options
    )
    return transport
