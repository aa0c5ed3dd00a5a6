"""Who may do what: tokens, encryption at rest, TLS and the query API's credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]



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


class QuerySettings(BaseModel):
    """The worker's HTTP query API (``/query``) and ``sluice query``.

    Reads run on ClickHouse connections and threads of their own, read-only, bounded in time,
    concurrency, result size and memory, so no query can hold back or change the inserts. A key's
    token reads only that key (the scoped ``metrics``/``logs``/``events`` queries); raw SQL needs
    ``admin_token``. ``sluice query`` sends it, or else the one ``sluice dev`` keeps in
    ``<data_dir>/dev-query-token``.
    """

    admin_token: SecretStr | None = Field(
        None, description="credential for raw SQL over HTTP (`Authorization: Bearer <it>`); unset = raw SQL "
        "is refused over HTTP. Never defaulted: generate one (at least 32 random bytes)",
    )
    timeout: float = Field(30.0, gt=0, description="seconds a read may run (ClickHouse max_execution_time)")
    max_concurrent: int = Field(4, ge=1, description="reads running at once; more wait for a slot")
    queue_timeout: float = Field(
        10.0, ge=0, description="seconds a read waits for a slot before it is refused (HTTP 429)"
    )
    max_result_rows: int = Field(100_000, ge=1, description="rows a read may return")
    max_memory_bytes: int = Field(
        1 << 30, ge=1 << 20, description="memory one read may use in ClickHouse (max_memory_usage)"
    )

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 32:
            raise ValueError("the admin token must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return token
