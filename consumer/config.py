"""Service configuration: a TOML file, then ``TIDAL_*`` environment variables, then CLI
flags, each overriding the one before (flags win). One validated model; a bad value
fails at start with the field's dotted name (``ConfigError``).

Nested fields in the environment use ``__``: ``TIDAL_WAL__BATCH_SIZE=2000``.
Kafka client options pass through to the backend's clients (``backend``: kafka-python by
default, or confluent = librdkafka): ``[kafka]`` to both clients (security, timeouts, e.g.
``security_protocol = "SASL_SSL"``, or ``"security.protocol" = "SASL_SSL"`` for
librdkafka), ``[kafka.consumer]`` and ``[kafka.producer]`` to one. An option the service
sets itself is refused when the configuration loads, as is an unknown kafka-python option
(librdkafka refuses its unknown ones when the service starts: exit 1, named).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as pydantic-settings uses it there
    import tomli as tomllib

from consumer.kafka import backends
from consumer.protocol.acks import MAX_ACK_OFFSETS
from walcore import WalConfig
from walcore.schema import Schema, SchemaBuilder, SchemaError

DEFAULT_SIGNALS: list[dict[str, Any]] = [
    {"name": "view", "id": 1, "half_life_seconds": 3600, "windows_seconds": [3600, 86400, 604800]},
    {"name": "click", "id": 2, "half_life_seconds": 21600, "windows_seconds": [3600, 86400, 604800]},
    {"name": "like", "id": 3, "half_life_seconds": 86400, "windows_seconds": [86400, 604800]},
    {"name": "share", "id": 4, "half_life_seconds": 172800, "windows_seconds": [86400, 604800], "velocity": True},
    {"name": "purchase", "id": 5, "half_life_seconds": 604800, "windows_seconds": [86400, 604800, 2592000]},
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class SignalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    id: int
    half_life_seconds: float
    windows_seconds: list[int]
    velocity: bool = False


def _wal_field(name: str) -> Any:
    """A WalConfig field as configuration: its default and its limits (WalConfig.LIMITS)."""
    limits: dict[str, Any] = {"allow_inf_nan": False, **WalConfig.LIMITS[name]}
    return Field(getattr(WalConfig, name), **limits)


def build_schema(signals: list[SignalConfig]) -> Schema:
    """The schema of ``[[signals]]`` tables (raises SchemaError naming the signal and field)."""
    builder = SchemaBuilder()
    for signal in signals:
        builder.signal(signal.name, signal.id, signal.half_life_seconds, signal.windows_seconds, signal.velocity)
    return builder.build()


class WalSettings(BaseModel):
    """walcore.WalConfig, as configuration (same names, same defaults, same limits)."""

    model_config = ConfigDict(extra="forbid")

    segment_size: int = _wal_field("segment_size")
    batch_size: int = _wal_field("batch_size")
    batch_timeout: float = _wal_field("batch_timeout")
    dedup_window: float = _wal_field("dedup_window")
    dedup_max_keys: int = _wal_field("dedup_max_keys")

    def to_wal_config(self) -> WalConfig:
        return WalConfig(**self.model_dump())


class StoreSettings(BaseModel):
    """``[store]``: the signal store the WAL is applied into (docs/store-format.md)."""

    model_config = ConfigDict(extra="forbid")

    # false: no store, and the WAL keeps every segment (the ingest-only service of old).
    enabled: bool = True
    # Where the store lives; default: a "store" directory inside the WAL directory, so one
    # volume (and the WAL's lock) holds both.
    dir: Path | None = None
    # How often the store is flushed, the WAL checkpointed and old segments deleted.
    flush_interval_s: float = Field(5.0, gt=0, le=3600, allow_inf_nan=False)
    # WAL bytes kept below the checkpoint anyway, for replay and for voids of old events.
    retain_wal_bytes: int = Field(256 * 1024 * 1024, ge=0)


class KafkaOptions(BaseModel):
    """``[kafka]`` (options for both clients), with ``[kafka.consumer]`` and ``[kafka.producer]``."""

    model_config = ConfigDict(extra="allow")

    consumer: dict[str, Any] = Field(default_factory=dict)
    producer: dict[str, Any] = Field(default_factory=dict)

    @property
    def common(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def for_consumer(self) -> dict[str, Any]:
        return {**self.common, **self.consumer}

    def for_producer(self) -> dict[str, Any]:
        return {**self.common, **self.producer}


# Kafka's own rule for topic names.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# A static member's id: Kafka allows these characters, at most 249 of them.
_INSTANCE_ID = r"^(auto|[A-Za-z0-9._-]{1,249})?$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDAL_", env_nested_delimiter="__", extra="forbid")
    file_values: ClassVar[dict[str, Any]] = {}  # the config file's tables (load_settings)

    # The Kafka client library: kafka-python, or confluent (librdkafka, the [librdkafka]
    # extra; faster). Both keep every invariant (docs/operations.md, "Backends").
    backend: str = "kafka-python"  # a name in consumer.kafka.backends.BACKENDS
    # How a batch's acks, dead letters and offset commit reach Kafka (docs/acks.md):
    # "standard": sent, then committed once delivered (a paused instance that lost its
    # partitions can still publish its last batch's acks); "transactional" (backend
    # "confluent"): one Kafka transaction per batch, fenced by the group generation
    # (KIP-447), so no such zombie's ack ever becomes visible. One mode per group.
    delivery: Literal["standard", "transactional"] = "standard"
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: list[str] = Field(default_factory=lambda: ["signals"], min_length=1)
    group_id: str = Field("tidal-consumer", min_length=1)
    # Static membership (KIP-345): "auto" = tidal-<wal_id>, so an instance restarted on its
    # WAL within the session timeout gets its partitions back without a rebalance; any
    # other value is used as is; "" = dynamic membership.
    group_instance_id: str = Field("auto", pattern=_INSTANCE_ID)
    reply_topic: str = Field("signals.acks", min_length=1)
    dlq_topic: str = Field("signals.dlq", min_length=1)
    wal_dir: Path = Path("wal")
    max_poll_records: int = Field(5000, ge=1, le=MAX_ACK_OFFSETS)  # an ack answers for one poll
    poll_timeout_ms: int = Field(200, ge=1, le=60_000)
    max_message_bytes: int = Field(4096, ge=64, le=1_048_576)
    metrics_interval_s: float = Field(10.0, gt=0)
    commit_retry_max_s: float = Field(30.0, gt=0)
    # The broker refusing us (rejected SASL credentials) this long ends the service (exit 7).
    kafka_refused_exit_s: float = Field(30.0, gt=0)
    # /metrics, /healthz, /readyz on this port (0: off); see docs/operations.md.
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # /healthz fails once the poll loop has not turned for this long.
    health_stall_s: float = Field(60.0, gt=0)
    wal: WalSettings = Field(default_factory=WalSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    kafka: KafkaOptions = Field(default_factory=KafkaOptions)
    signals: list[SignalConfig] = Field(default_factory=lambda: [SignalConfig(**s) for s in DEFAULT_SIGNALS])

    @model_validator(mode="after")
    def _topics_are_usable(self) -> Settings:
        named = {"topics": self.topics, "reply_topic": [self.reply_topic], "dlq_topic": [self.dlq_topic]}
        for field, names in named.items():
            for name in names:
                if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
                    raise ValueError(f"{field}: {name!r} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)")
        # Acks or dead letters written to an input topic would be consumed again, and
        # again: the service would feed itself for ever.
        for field in ("reply_topic", "dlq_topic"):
            if getattr(self, field) in self.topics:
                raise ValueError(
                    f"{field}: {getattr(self, field)!r} is also an input topic: the service would "
                    "consume its own output for ever"
                )
        if self.reply_topic == self.dlq_topic:
            raise ValueError(
                f"dlq_topic: {self.dlq_topic!r} is also the reply topic: dead letters and acks need topics of their own"
            )
        return self

    @field_validator("backend")
    @classmethod
    def _backend_is_installed(cls, name: str) -> str:
        backends.check(name)
        return name

    @model_validator(mode="after")
    def _backend_fences_transactions(self) -> Settings:
        if self.delivery == "transactional" and not backends.BACKENDS[self.backend].fences:
            raise ValueError(
                f'delivery: "transactional" needs backend = "confluent": {self.backend}\'s transactional offset '
                "commit does not carry the group generation (KIP-447), so it would not fence a paused instance"
            )
        return self

    @model_validator(mode="after")
    def _backend_takes_the_options(self) -> Settings:
        kafka = self.kafka
        problems = backends.option_problems(self.backend, kafka.common, kafka.consumer, kafka.producer)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _metrics_host_is_an_address(self) -> Settings:
        if not self.metrics_host.strip():
            raise ValueError(
                "metrics_host: empty; give the address to listen on (127.0.0.1, or 0.0.0.0 for every interface)"
            )
        return self

    @model_validator(mode="after")
    def _schema_is_valid(self) -> Settings:
        try:
            self.signal_schema()
        except SchemaError as exc:
            raise ValueError(f"signals: {exc}") from None
        return self

    def producer_request_bytes(self) -> int:
        """The largest request the producer sends (kafka-python's max_request_size, 1 MiB,
        or librdkafka's message.max.bytes, 1,000,000, unless [kafka.producer] says
        otherwise): every ack and dead letter must fit it."""
        return backends.request_limit(self.backend, self.kafka.for_producer())

    def store_dir(self) -> Path:
        return self.store.dir if self.store.dir is not None else self.wal_dir / "store"

    def instance_id(self, wal_id: str) -> str | None:
        """The consumer's group.instance.id for the WAL ``wal_id`` (None: dynamic membership)."""
        if self.group_instance_id == "auto":
            return f"tidal-{wal_id}"
        return self.group_instance_id or None

    def signal_schema(self) -> Schema:
        return build_schema(self.signals)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First listed wins: CLI flags (passed as init kwargs), then env, then the TOML file
        # (read once by load_settings, which sets ``file_values``).
        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=cls.file_values)


def _read_toml(path: Path) -> dict[str, Any]:
    """The config file's tables, or one line naming what is wrong with it (a missing
    file, not UTF-8, not TOML: pydantic-settings would raise the parser's traceback)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings from file < environment < flags. Raises ConfigError."""
    from_file = _read_toml(config_file) if config_file is not None else {}
    overrides = {key: value for key, value in flags.items() if value is not None}

    class _FromFile(Settings):
        file_values: ClassVar[dict[str, Any]] = from_file

    try:
        return _FromFile(**overrides)
    except SettingsError as exc:  # an environment variable that should hold JSON does not
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"TIDAL_{found.group(1).upper()}" if found else "a TIDAL_* variable"
        raise ConfigError(
            f"invalid configuration: {name} (or a {name}__* variable) does not hold valid JSON: lists "
            "and tables from the environment are written in JSON, e.g. TIDAL_TOPICS='[\"signals\"]', "
            "TIDAL_KAFKA__CONSUMER='{\"fetch_max_wait_ms\": 100}'"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'config'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        source = f" (file {config_file}, TIDAL_* environment, flags)" if config_file else ""
        raise ConfigError(f"invalid configuration{source}: {problems}") from None
