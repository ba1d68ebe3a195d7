"""A secured broker, for real: a jar broker of this module's own with a SASL_SSL listener
(SCRAM-SHA-512 over TLS; certificates made here with trustme, the user created with the
broker's own StorageTool). The service and DurableProducer work over it end to end; wrong
credentials or an untrusted certificate end the service with exit 7 and a clear line,
storing and acking nothing; no secret appears in any log line."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from consumer.client import DurableProducer
from scripts import kafka_local
from tests.support.service_helpers import Service, dump, end_offsets, event, produce

pytestmark = pytest.mark.kafka

PASSWORD = "Tidal-s3cret-Pw"


class SecureBroker(NamedTuple):
    plain: str  # 127.0.0.1:port of the PLAINTEXT listener (test setup only)
    secure: str  # 127.0.0.1:port of the SASL_SSL listener
    cafile: Path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if not shutil.which("java"):
        pytest.skip("needs Java for a broker of its own with a SASL_SSL listener")
    directory = tmp_path_factory.mktemp("secure-kafka")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    keystore = directory / "server.pem"  # Kafka's PEM keystore: a PKCS#8 key and the chain
    keystore.write_bytes(key + b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cafile = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    listener = kafka_local.SecureListener(kafka_local.free_port(), keystore, {"tidal": PASSWORD})
    broker = kafka_local.start_jar_broker(
        directory / "kafka", kafka_local.free_port(), tied_to_parent=True, secure=listener
    )
    try:
        yield SecureBroker(broker.bootstrap, f"127.0.0.1:{listener.port}", cafile)
    finally:
        broker.stop()


def security(cafile: Path, password: str = PASSWORD, backend: str = "kafka-python") -> dict[str, str]:
    """The client options for the SASL_SSL listener, in the backend's names."""
    if backend == "confluent":
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "tidal",
            "sasl.password": password,
            "ssl.ca.location": str(cafile),
        }
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tidal",
        "sasl_plain_password": password,
        "ssl_cafile": str(cafile),
    }


def config_file(tmp_path: Path, options: dict[str, str]) -> list[str]:
    path = tmp_path / "secure.toml"
    lines = [f"{json.dumps(name)} = {json.dumps(value)}" for name, value in options.items()]
    path.write_text("kafka_refused_exit_s = 3\n[kafka]\n" + "\n".join(lines) + "\n")
    return ["--config", str(path)]


def topics_on(broker: SecureBroker) -> tuple[str, str, str]:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    kafka_local.service_topics(broker.plain, name, 2)
    return name, f"{name}.acks", f"{name}.dlq"


def test_service_and_durable_producer_work_over_sasl_ssl(
    secure_broker: SecureBroker, tmp_path: Path, backend: str
) -> None:
    topic, reply, dlq = topics_on(secure_broker)
    service = Service(
        secure_broker.secure,
        topic,
        tmp_path / "wal",
        group=f"g-{topic}",
        reply=reply,
        dlq=dlq,
        extra=config_file(tmp_path, security(secure_broker.cafile, backend=backend)),
    )
    with DurableProducer(
        secure_broker.secure, topic, reply, backend=backend, **security(secure_broker.cafile, backend=backend)
    ) as producer:
        results = [f.result(timeout=90) for f in [producer.send(event(i)) for i in range(200)]]
    assert service.stop() == 0, service.log()
    assert sorted(r.seq for r in results) == list(range(1, 201))
    assert PASSWORD not in service.log()


@pytest.mark.parametrize("wrong", ["password", "certificate"])
def test_wrong_credentials_or_an_untrusted_certificate_exit_7_storing_nothing(
    secure_broker: SecureBroker, tmp_path: Path, wrong: str, backend: str
) -> None:
    topic, reply, dlq = topics_on(secure_broker)
    positions = produce(secure_broker.plain, topic, [event(i) for i in range(50)])
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    options = (
        security(secure_broker.cafile, password="Not-the-Pw-42", backend=backend)
        if wrong == "password"
        else security(other_ca, backend=backend)
    )
    service = Service(
        secure_broker.secure,
        topic,
        tmp_path / "wal",
        group=f"g-{topic}",
        reply=reply,
        dlq=dlq,
        extra=config_file(tmp_path, options),
    )
    assert service.process.wait(timeout=120) == 7, service.log()
    service.kill()
    log = service.log()
    assert "refuses this client" in log and "Traceback" not in log
    said = {
        ("kafka-python", "password"): "SaslAuthenticationFailed",
        ("kafka-python", "certificate"): "CERTIFICATE_VERIFY_FAILED",
        ("confluent", "password"): "Authentication failed",
        ("confluent", "certificate"): "certificate verify failed",
    }
    assert said[backend, wrong] in log
    assert PASSWORD not in log and "Not-the-Pw-42" not in log
    assert dump(tmp_path / "wal") == [] and positions
    assert set(end_offsets(secure_broker.plain, reply, 2).values()) == {0}  # no ack
