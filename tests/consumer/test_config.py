"""Configuration: file < environment < flags, and errors that name the field."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_and_matches_the_defaults() -> None:
    from_file = load_settings(ROOT / "config" / "consumer.toml").model_dump()
    defaults = load_settings().model_dump()
    # The one difference on purpose: the example serves /metrics and the probes (off by default).
    assert (from_file.pop("metrics_port"), defaults.pop("metrics_port")) == (9400, 0)
    assert from_file == defaults


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'group_id = "from-file"\nreply_topic = "file-acks"\ndlq_topic = "file-dlq"\n[wal]\nbatch_size = 100\n'
    )
    monkeypatch.setenv("TIDAL_GROUP_ID", "from-env")
    monkeypatch.setenv("TIDAL_REPLY_TOPIC", "env-acks")
    monkeypatch.setenv("TIDAL_WAL__BATCH_TIMEOUT", "0.5")
    settings = load_settings(config, group_id="from-flag")
    assert settings.group_id == "from-flag"
    assert settings.reply_topic == "env-acks"
    assert settings.dlq_topic == "file-dlq"
    assert (settings.wal.batch_size, settings.wal.batch_timeout) == (100, 0.5)


@pytest.mark.parametrize(
    "toml,field",
    [
        ("max_poll_records = 0", "max_poll_records"),
        ("[wal]\nsegment_size = 0", "wal.segment_size"),
        ("[wal]\ndedup_window = inf", "wal.dedup_window"),
        ("unknown_option = 1", "unknown_option"),
        ("[kafka]\nenable_auto_commit = true", "enable_auto_commit"),
        ("[kafka]\nsession_timeout_ms = 6000", r"kafka.session_timeout_ms is an option of the consumer only"),
        ("[kafka]\nlinger_ms = 5", r"kafka.linger_ms is an option of the producer only"),
        ("[kafka]\nno_such_option = 5", r"kafka.no_such_option is not a kafka-python client option"),
        ("[kafka.consumer]\nacks = 1", r"kafka.consumer.acks is not a kafka-python consumer option"),
        ("[kafka.consumer]\ngroup_instance_id = 'x'", r"kafka.consumer.group_instance_id cannot be set"),
        ("[kafka.producer]\nacks = 1", r"kafka.producer.acks cannot be set"),
        ("[kafka.producer]\ntransactional_id = 'x'", r"kafka.producer.transactional_id cannot be set"),
        ('delivery = "transactional"', r'delivery: "transactional" needs backend = "confluent"'),
        ('delivery = "exactly-once"', r"delivery"),
        ('group_instance_id = "has space"', "group_instance_id"),
        ('topics = ["signals"]\nreply_topic = "signals"', "reply_topic: 'signals' is also an input topic"),
        ('topics = ["a", "b"]\ndlq_topic = "b"', "dlq_topic: 'b' is also an input topic"),
        ('reply_topic = "x"\ndlq_topic = "x"', "dlq_topic: 'x' is also the reply topic"),
        ('topics = ["bad topic!"]', "topics: 'bad topic!' is not a valid Kafka topic name"),
        ('reply_topic = ".."', "reply_topic: '..' is not a valid Kafka topic name"),
        ('dlq_topic = "' + "d" * 250 + '"', "dlq_topic"),
        ('[[signals]]\nname = "view"\nid = 1\nhalf_life_seconds = -1\nwindows_seconds = [1]', "half_life_seconds"),
        (
            '[[signals]]\nname = "a"\nid = 1\nhalf_life_seconds = 1\nwindows_seconds = [1]\n'
            '[[signals]]\nname = "b"\nid = 1\nhalf_life_seconds = 1\nwindows_seconds = [1]',
            "duplicate id",
        ),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, toml: str, field: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=field):
        load_settings(config)


@pytest.mark.parametrize(
    "toml,field",
    [
        ('"default.topic.config" = {"auto.offset.reset" = "latest"}', r"kafka.default.topic.config cannot be set"),
        ('[kafka.producer]\n"delivery.report.only.error" = true', r"kafka.producer.delivery.report.only.error cannot"),
        ('[kafka.consumer]\n"auto.commit.enable" = true', r"kafka.consumer.auto.commit.enable cannot be set"),
        ('[kafka.consumer]\n"offset.store.method" = "file"', r"never to a local file"),
        ('"topic.blacklist" = "signals"', r"kafka.topic.blacklist cannot be set"),
        ('"test.mock.num.brokers" = 3', r"mock cluster"),
        ('[kafka.producer]\n"queuing.strategy" = "lifo"', r"in the order they were sent"),
        ('"auto.offset.reset" = "latest"', r"kafka.auto.offset.reset cannot be set"),
        ('[kafka.consumer]\n"isolation.level" = "read_uncommitted"', r"an aborted transaction's events"),
        ('[kafka.producer]\n"transactional.id" = "mine"', r'set delivery = "transactional" instead'),
    ],
)
def test_librdkafka_options_that_would_skip_or_drop_data_are_refused_at_load(
    tmp_path: Path, toml: str, field: str
) -> None:
    config = tmp_path / "bad.toml"
    table, _, rest = toml.partition("\n") if toml.startswith("[") else ("[kafka]", "", toml)
    config.write_text(f"{table}\n{rest}\n")
    with pytest.raises(ConfigError, match=field):
        load_settings(config, backend="confluent")


CONSOLE = Path(sys.executable).parent / "tidal-consumer"


@pytest.mark.parametrize(
    "content,env,line",
    [
        (b'group_id = "unterminated\n', {}, r"is not valid TOML: .* \(at line 1, column 25\)"),
        (b'group_id = "\xff"\n', {}, r"is not UTF-8 text \(byte 12"),
        (b"", {"TIDAL_TOPICS": "signals"}, r"TIDAL_TOPICS .* does not hold valid JSON"),
        (b"", {"TIDAL_KAFKA__CONSUMER": "notjson"}, r"TIDAL_KAFKA .* does not hold valid JSON"),
    ],
)
def test_a_config_that_cannot_be_read_is_one_line_and_exit_1(
    tmp_path: Path, content: bytes, env: dict[str, str], line: str
) -> None:
    config = tmp_path / "consumer.toml"
    config.write_bytes(content)
    result = subprocess.run(
        [str(CONSOLE), "run", "--config", str(config), "--wal-dir", str(tmp_path / "wal")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and re.search(line, result.stderr), result.stderr
    assert not (tmp_path / "wal").exists()  # refused before anything was opened


def test_transactional_delivery_loads_on_confluent() -> None:
    assert load_settings(None, backend="confluent", delivery="transactional").delivery == "transactional"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_kafka_options_go_to_the_client_that_has_them(tmp_path: Path) -> None:
    config = tmp_path / "kafka.toml"
    config.write_text(
        '[kafka]\nsecurity_protocol = "PLAINTEXT"\nclient_id = "mine"\n'
        '[kafka.consumer]\nsession_timeout_ms = 6000\nisolation_level = "read_committed"\n'
        "max_partition_fetch_bytes = 2097152\n"
        "[kafka.producer]\nlinger_ms = 7\n"
    )
    settings = load_settings(config)
    assert settings.kafka.for_consumer() == {
        "security_protocol": "PLAINTEXT",
        "client_id": "mine",
        "session_timeout_ms": 6000,
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 2097152,
    }
    assert settings.kafka.for_producer() == {"security_protocol": "PLAINTEXT", "client_id": "mine", "linger_ms": 7}


def test_static_membership_is_derived_from_the_wal_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().instance_id("9a3c7eaa") == "tidal-9a3c7eaa"
    assert load_settings(group_instance_id="node-7").instance_id("9a3c7eaa") == "node-7"
    assert load_settings(group_instance_id="").instance_id("9a3c7eaa") is None  # dynamic membership


@pytest.mark.parametrize(
    "args,line",
    [
        (["--entity", "-1"], r"--entity '-1': an entity id is an integer from 0 to 2\*\*64-1"),
        (["--entity", str(2**64)], r"an entity id is an integer from 0 to 2\*\*64-1"),
        (["--entity", "1", "--at", "1969-12-31T23:59:59.5Z"], r"outside the event time range"),
        (["--entity", "1", "--at", "9999-01-01T00:00:00Z"], r"outside the event time range"),
        (["--entity", "1", "--at", "yesterday"], r"--at 'yesterday': not an RFC 3339 time"),
    ],
)
def test_a_query_usage_error_is_one_line_and_exit_2(tmp_path: Path, args: list[str], line: str) -> None:
    result = subprocess.run(
        [str(CONSOLE), "query", *args, "--wal-dir", str(tmp_path / "wal")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and re.search(line, result.stderr), result.stderr
