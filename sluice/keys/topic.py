"""The record format of the compacted access-key topic (``kafka.config_topic``).

Key: the access key (UTF-8). Value: the key's :class:`AccessKeyConfig` as JSON, or no value
(a tombstone) when the key was deleted. The latest record of a key is its configuration.
"""

from __future__ import annotations

from pydantic import ValidationError

from sluice.keys.exceptions import KeyStoreCorrupt
from sluice.keys.models import AccessKeyConfig


def encode_config(config: AccessKeyConfig) -> tuple[bytes, bytes]:
    """The record key and value of a configuration."""
    return config.access_key.encode(), config.model_dump_json().encode()


def decode_config(key: bytes, value: bytes | None) -> AccessKeyConfig | None:
    """The configuration a record holds; None for a tombstone.

    Raises :class:`KeyStoreCorrupt` when the value is not a configuration of that key.
    """
    if value is None:
        return None
    try:
        config = AccessKeyConfig.model_validate_json(value)
    except ValidationError as exc:
        raise KeyStoreCorrupt(f"config record for {key!r} is not an access-key configuration: {exc}") from exc
    if config.access_key.encode() != key:
        raise KeyStoreCorrupt(f"config record keyed {key!r} holds the configuration of {config.access_key!r}")
    return config
