"""The JWT keys of the gateway, by key id (``kid``), loaded and checked once from the settings.

Every key is checked against every allowed algorithm: the right family (HMAC secret for HS*,
RSA for RS*/PS*, EC on the algorithm's curve for ES*) and at least the length RFC 7518 asks
for (an HMAC secret as long as the hash, RSA of 2048 bits). The gateway's HMAC secrets must
also look random (:mod:`sluice.secret_strength`): a placeholder such as the shipped manifests'
would let anyone sign tokens. A bad key is a :class:`ConfigurationError` at start, never a
surprise on the first call.
"""

from __future__ import annotations

from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from pydantic import SecretStr

from sluice.exceptions import ConfigurationError
from sluice.secret_strength import HOW_TO_MAKE_ONE, weakness
from sluice.settings import AuthSettings

PublicKey = RSAPublicKey | EllipticCurvePublicKey
PrivateKey = RSAPrivateKey | EllipticCurvePrivateKey
VerifyingKey = bytes | PublicKey
SigningKey = bytes | PrivateKey


def is_hmac(auth: AuthSettings) -> bool:
    """Whether tokens are HMAC-signed (the settings forbid mixing HS* with public-key families)."""
    return auth.algorithms[0].startswith("HS")


def _check(key: VerifyingKey | SigningKey, auth: AuthSettings, where: str) -> None:
    """``key`` fits every allowed algorithm: family, curve and length."""
    if not isinstance(key, bytes):
        rsa = isinstance(key, (RSAPublicKey, RSAPrivateKey))
        for algorithm in auth.algorithms:
            if rsa != (algorithm[:2] in ("RS", "PS")):
                kind = "an RSA" if rsa else "an EC"
                raise ConfigurationError(f"{where} holds {kind} key, which cannot verify {algorithm} tokens")
    for algorithm in auth.algorithms:
        implementation = jwt.get_algorithm_by_name(algorithm)
        try:
            prepared = implementation.prepare_key(key)
        except jwt.InvalidKeyError as exc:
            raise ConfigurationError(f"{where} cannot be used for {algorithm}: {exc}") from exc
        weakness = implementation.check_key_length(prepared)
        if weakness is not None:
            raise ConfigurationError(f"{where} is too weak for {algorithm}: {weakness}")


def _secret(value: SecretStr, where: str) -> bytes:
    secret = value.get_secret_value().encode()
    if not secret:
        raise ConfigurationError(f"{where} is empty")
    return secret


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {where} {path}: {exc.strerror}") from exc


def _public_key(path: Path, where: str) -> PublicKey:
    try:
        key = load_pem_public_key(_read(path, where))
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, (RSAPublicKey, EllipticCurvePublicKey)):
        raise ConfigurationError(f"{path} is neither an RSA nor an EC public key")
    return key


def _private_key(path: Path, where: str) -> PrivateKey:
    try:
        key = load_pem_private_key(_read(path, where), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, (RSAPrivateKey, EllipticCurvePrivateKey)):
        raise ConfigurationError(f"{path} is neither an RSA nor an EC private key")
    return key


def verification_keys(auth: AuthSettings) -> dict[str | None, VerifyingKey]:
    """The keys tokens are verified with, by ``kid`` (None: tokens without one).

    :class:`ConfigurationError` when there is none or one is unusable.
    """
    keys: dict[str | None, VerifyingKey] = {}
    if is_hmac(auth):
        setting, hint = "auth.jwt_secret", "set SLUICE_AUTH_JWT_SECRET"
        secrets: dict[str | None, SecretStr] = {kid: v for kid, v in auth.jwt_secrets.items()}
        if auth.jwt_secret is not None:
            secrets[None] = auth.jwt_secret
        for kid, value in secrets.items():
            where = setting if kid is None else f"auth.jwt_secrets[{kid!r}]"
            keys[kid] = _secret(value, where)
            _check(keys[kid], auth, where)
            problem = weakness(value.get_secret_value())
            if problem is not None:
                raise ConfigurationError(f"{where} {problem}", hint=HOW_TO_MAKE_ONE)
    else:
        setting = "auth.jwt_public_key_file"
        hint = "set SLUICE_AUTH_JWT_PUBLIC_KEY_FILE to a PEM file"
        paths: dict[str | None, Path] = {kid: p for kid, p in auth.jwt_public_key_files.items()}
        if auth.jwt_public_key_file is not None:
            paths[None] = auth.jwt_public_key_file
        for kid, path in paths.items():
            keys[kid] = _public_key(path, setting if kid is None else f"auth.jwt_public_key_files[{kid!r}]")
            _check(keys[kid], auth, str(path))
    if not keys:
        raise ConfigurationError(
            f"no JWT key: {setting} is not set but the allowed algorithms are {auth.algorithms}", hint=hint
        )
    return keys


def signing_key(auth: AuthSettings) -> tuple[str | None, SigningKey]:
    """The ``kid`` (None: no header) and key tokens are issued with; :class:`ConfigurationError`."""
    kid = auth.jwt_kid
    if is_hmac(auth):
        if kid is not None:
            if kid not in auth.jwt_secrets:
                raise ConfigurationError(
                    f"auth.jwt_kid {kid!r} has no secret in auth.jwt_secrets",
                    hint="add it to SLUICE_AUTH_JWT_SECRETS",
                )
            secret = _secret(auth.jwt_secrets[kid], f"auth.jwt_secrets[{kid!r}]")
        elif auth.jwt_secret is not None:
            secret = _secret(auth.jwt_secret, "auth.jwt_secret")
        else:
            raise ConfigurationError(
                f"no JWT key: auth.jwt_secret is not set but the allowed algorithms are {auth.algorithms}",
                hint="set SLUICE_AUTH_JWT_SECRET",
            )
        _check(secret, auth, "auth.jwt_secret" if kid is None else f"auth.jwt_secrets[{kid!r}]")
        return kid, secret
    path = auth.jwt_private_key_file
    if path is None:
        raise ConfigurationError(
            f"no JWT key: auth.jwt_private_key_file is not set but the allowed algorithms are {auth.algorithms}",
            hint="set SLUICE_AUTH_JWT_PRIVATE_KEY_FILE to a PEM file",
        )
    key = _private_key(path, "auth.jwt_private_key_file")
    _check(key, auth, str(path))
    return kid, key
