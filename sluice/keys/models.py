"""The configuration one access key carries."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from sluice.keys.exceptions import InvalidAccessKey

Stream = Literal["logs", "events", "metrics_1s", "metrics_1m", "spans"]
Sink = Literal["file", "clickhouse"]

DEFAULT_ROUTES: dict[Stream, list[Sink]] = {
    "logs": ["file", "clickhouse"],
    "events": ["file", "clickhouse"],
    "metrics_1s": ["clickhouse"],
    "metrics_1m": ["clickhouse"],
    "spans": ["clickhouse"],
}

# Keys name directories of the file sink and Kafka record keys, so they stay path- and key-safe.
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{3,64}$")


def validate_access_key(key: str) -> str:
    """Return ``key`` if it is a well-formed access key, else raise :class:`InvalidAccessKey`."""
    if not _KEY_RE.fullmatch(key):
        raise InvalidAccessKey(
            f"invalid access key {key[:80]!r}",
            hint="3 to 64 characters from A-Z, a-z, 0-9, '_' and '-'",
        )
    return key


class Limits(BaseModel):
    """Per-key limits; 0 means unlimited.

    ``bytes_*`` are enforced by the gateway on what a key sends; ``events_*`` by the worker's
    throttler on the envelopes it processes (metrics are never throttled).
    """

    bytes_per_second: int = Field(0, ge=0)
    bytes_burst: int = Field(0, ge=0, description="bucket size in bytes; 0 = one second's worth")
    events_per_second: int = Field(0, ge=0)
    events_burst: int = Field(0, ge=0, description="bucket size in envelopes; 0 = one second's worth")
    over_limit: Literal["drop", "sample"] = Field(
        "drop", description="what happens to logs and events over events_per_second"
    )
    sample_one_in: int = Field(10, ge=1, description="with over_limit=sample: keep 1 in N")


class AccessKeyConfig(BaseModel):
    """Everything Sluice knows about one access key."""

    access_key: str
    enabled: bool = True
    description: str = ""
    shards: int = Field(1, ge=1, le=1024)
    encrypt: bool = Field(False, description="encrypt this key's records at rest in Kafka")
    limits: Limits = Field(default_factory=Limits)
    routes: dict[Stream, list[Sink]] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    version: int = Field(1, ge=1)

    @field_validator("access_key")
    @classmethod
    def _valid_key(cls, key: str) -> str:
        try:
            return validate_access_key(key)
        except InvalidAccessKey as exc:
            raise ValueError(str(exc)) from exc

    def sinks_for(self, stream: Stream) -> list[Sink]:
        """The sinks this key routes ``stream`` to (the defaults when unset)."""
        return self.routes.get(stream, DEFAULT_ROUTES[stream])
