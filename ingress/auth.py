"""Who is calling: JWT bearer tokens bound to an access key, checked before a request is read.

Every call carries ``authorization: Bearer <JWT>`` and ``x-access-key: <key>``. The token must be
signed with an allowed algorithm, carry ``exp``, ``iat`` and ``sub`` (plus ``aud``/``iss`` when
configured), and its ``sub`` must be the access key. :func:`issue_token` makes such tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from sluice.exceptions import ConfigurationError
from sluice.ingress.exceptions import PermissionDenied, Unauthenticated, quoted
from sluice.keys import AccessKeyConfig, AccessKeyStore, validate_access_key
from sluice.settings import AuthSettings
from sluice.wire import ACCESS_KEY, AUTHORIZATION

Metadata = Iterable[tuple[str, str | bytes]]
PublicKey = RSAPublicKey | EllipticCurvePublicKey
PrivateKey = RSAPrivateKey | EllipticCurvePrivateKey


def _is_hmac(auth: AuthSettings) -> bool:
    # The settings forbid mixing HS* with the public-key families.
    return auth.algorithms[0].startswith("HS")


def _hmac_secret(auth: AuthSettings) -> str:
    secret = auth.jwt_secret.get_secret_value() if auth.jwt_secret is not None else ""
    if not secret:
        raise ConfigurationError(
            f"no JWT key: auth.jwt_secret is not set but the allowed algorithms are {auth.algorithms}",
            hint="set SLUICE_AUTH_JWT_SECRET",
        )
    return secret


def _read_pem(path: Path | None, setting: str, auth: AuthSettings) -> bytes:
    if path is None:
        raise ConfigurationError(
            f"no JWT key: auth.{setting} is not set but the allowed algorithms are {auth.algorithms}",
            hint=f"set SLUICE_AUTH_{setting.upper()} to a PEM file",
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read auth.{setting} {path}: {exc.strerror}") from exc


def _check_family(key: object, auth: AuthSettings, path: Path) -> None:
    """RS*/PS* need an RSA key, ES* an EC key."""
    rsa = isinstance(key, (RSAPublicKey, RSAPrivateKey))
    for algorithm in auth.algorithms:
        if rsa != (algorithm[:2] in ("RS", "PS")):
            kind = "an RSA" if rsa else "an EC"
            raise ConfigurationError(f"{path} holds {kind} key, which cannot verify {algorithm} tokens")


def verification_key(auth: AuthSettings) -> str | PublicKey:
    """The key tokens are verified with; :class:`ConfigurationError` when there is none."""
    if _is_hmac(auth):
        return _hmac_secret(auth)
    pem = _read_pem(auth.jwt_public_key_file, "jwt_public_key_file", auth)
    assert auth.jwt_public_key_file is not None
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigurationError(f"{auth.jwt_public_key_file} is not a PEM public key") from exc
    if not isinstance(key, (RSAPublicKey, EllipticCurvePublicKey)):
        raise ConfigurationError(f"{auth.jwt_public_key_file} is neither an RSA nor an EC public key")
    _check_family(key, auth, auth.jwt_public_key_file)
    return key


def signing_key(auth: AuthSettings) -> str | PrivateKey:
    """The key tokens are issued with; :class:`ConfigurationError` when there is none."""
    if _is_hmac(auth):
        return _hmac_secret(auth)
    pem = _read_pem(auth.jwt_private_key_file, "jwt_private_key_file", auth)
    assert auth.jwt_private_key_file is not None
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{auth.jwt_private_key_file} is not an unencrypted PEM private key"
        ) from exc
    if not isinstance(key, (RSAPrivateKey, EllipticCurvePrivateKey)):
        raise ConfigurationError(f"{auth.jwt_private_key_file} is neither an RSA nor an EC private key")
    _check_family(key, auth, auth.jwt_private_key_file)
    return key


def issue_token(
    auth: AuthSettings, access_key: str, ttl_seconds: float, *, now: float | None = None
) -> str:
    """A token for ``access_key`` valid for ``ttl_seconds``, signed with the first allowed algorithm.

    ``now`` (seconds since the epoch) is the issue time; it defaults to the current time.
    """
    validate_access_key(access_key)
    if not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": access_key, "iat": issued, "exp": issued + math.ceil(ttl_seconds)}
    if auth.audience is not None:
        claims["aud"] = auth.audience
    if auth.issuer is not None:
        claims["iss"] = auth.issuer
    return jwt.encode(claims, signing_key(auth), algorithm=auth.algorithms[0])


class TokenVerifier:
    """Verifies the bearer token of a call and returns the access key it was issued for."""

    def __init__(self, auth: AuthSettings) -> None:
        self._key = verification_key(auth)
        self._algorithms = list(auth.algorithms)
        self._audience = auth.audience
        self._issuer = auth.issuer
        self._leeway = auth.leeway
        require = ["exp", "sub", "iat"]
        require += ["aud"] if auth.audience is not None else []
        require += ["iss"] if auth.issuer is not None else []
        self._options: jwt.types.Options = {"require": require}

    def verify(self, authorization: str | None, access_key: str | None) -> str:
        """The access key of a call with these metadata values, or :class:`Unauthenticated`."""
        if not authorization:
            raise Unauthenticated(f"missing {AUTHORIZATION!r} metadata: expected 'Bearer <JWT>'")
        if not access_key:
            raise Unauthenticated(f"missing {ACCESS_KEY!r} metadata")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(f"malformed {AUTHORIZATION!r} metadata: expected 'Bearer <JWT>'")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options=self._options,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(self._reason(token, exc)) from exc
        subject = claims["sub"]
        if subject != access_key:
            raise Unauthenticated(
                f"token subject {quoted(subject)} does not match {ACCESS_KEY} {quoted(access_key)}"
            )
        return access_key

    def _reason(self, token: str, exc: jwt.InvalidTokenError) -> str:
        """A precise, client-facing reason for a rejected token."""
        if isinstance(exc, jwt.InvalidAlgorithmError):
            algorithm = str(jwt.get_unverified_header(token).get("alg"))
            allowed = ", ".join(self._algorithms)
            return f"token algorithm {quoted(algorithm)} is not allowed (allowed: {allowed})"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "token signature is invalid"
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "token has expired"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "token is not valid yet"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"token lacks the {exc.claim!r} claim"
        if isinstance(exc, jwt.InvalidAudienceError):
            if self._audience is None:
                return "token has an audience but the gateway expects none"
            return f"token audience is not {self._audience!r}"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"token issuer is not {self._issuer!r}"
        if isinstance(exc, jwt.DecodeError):
            return f"malformed token: {exc}"
        return f"invalid token: {exc}"


def metadata_value(metadata: Metadata | None, name: str) -> str | None:
    """The first value of ``name`` in a call's metadata, or None."""
    for key, value in metadata or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class Authenticator:
    """Authenticates a call from its metadata and authorizes its access key."""

    def __init__(self, verifier: TokenVerifier, keys: AccessKeyStore) -> None:
        self._verifier = verifier
        self._keys = keys

    def authenticate(self, metadata: Metadata | None) -> AccessKeyConfig:
        """The caller's key configuration; :class:`Unauthenticated` or :class:`PermissionDenied`."""
        access_key = self._verifier.verify(
            metadata_value(metadata, AUTHORIZATION), metadata_value(metadata, ACCESS_KEY)
        )
        config = self._keys.get(access_key)
        if config is None:
            raise PermissionDenied(f"unknown access key {quoted(access_key)}")
        if not config.enabled:
            raise PermissionDenied(f"access key {quoted(access_key)} is disabled")
        return config
