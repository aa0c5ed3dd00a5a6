"""Who is calling: JWT bearer tokens bound to an access key, checked before a request is read.

Every call carries ``authorization: Bearer <JWT>`` and ``x-access-key: <key>``. The token must be
signed with an allowed algorithm by the key its ``kid`` names (see :mod:`sluice.ingress.jwt_keys`),
carry ``exp``, ``iat`` and ``sub`` (plus ``aud``/``iss`` when configured), and its ``sub`` must be
the access key. :func:`issue_token` makes such tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from sluice.ingress.exceptions import PermissionDenied, Unauthenticated, quoted
from sluice.ingress.jwt_keys import VerifyingKey, signing_key, verification_keys
from sluice.keys import AccessKeyConfig, AccessKeyStore, validate_access_key
from sluice.settings import AuthSettings
from sluice.wire import ACCESS_KEY, AUTHORIZATION

Metadata = Iterable[tuple[str, str | bytes]]


def issue_token(
    auth: AuthSettings, access_key: str, ttl_seconds: float, *, now: float | None = None
) -> str:
    """A token for ``access_key`` valid for ``ttl_seconds``, signed with the first allowed algorithm
    and, when ``auth.jwt_kid`` is set, that key id.

    ``now`` (seconds since the epoch) is the issue time; it defaults to the current time.
    """
    validate_access_key(access_key)
    if not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
    if math.ceil(ttl_seconds) > auth.max_token_lifetime:
        raise ValueError(
            f"ttl_seconds {math.ceil(ttl_seconds)} exceeds auth.max_token_lifetime ({auth.max_token_lifetime:.0f}s)"
        )
    kid, key = signing_key(auth)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": access_key, "iat": issued, "exp": issued + math.ceil(ttl_seconds)}
    if auth.audience is not None:
        claims["aud"] = auth.audience
    if auth.issuer is not None:
        claims["iss"] = auth.issuer
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims, key, algorithm=auth.algorithms[0], headers=headers)


class TokenVerifier:
    """Verifies the bearer token of a call and returns the access key it was issued for.

    The header's ``alg`` must be allowed and its ``kid`` (or its absence) must name a configured
    key before the signature is checked; then ``exp``, ``iat``, ``sub`` (and ``aud``/``iss`` when
    configured) are required, ``nbf`` is honoured, ``leeway`` bounds clock skew and
    ``max_token_lifetime`` bounds ``exp - iat``.

    A token that passed is remembered (at most ``CACHE_TOKENS`` of them) with its subject until it
    expires: every check but ``exp`` gives the same answer later, and an agent sends the same
    token with every call, so later calls skip the signature and claim checks (about a sixth of
    a unary ``Send``'s CPU).
    """

    CACHE_TOKENS = 10_000

    def __init__(self, auth: AuthSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._keys: dict[str | None, VerifyingKey] = verification_keys(auth)
        self._algorithms = list(auth.algorithms)
        self._audience = auth.audience
        self._issuer = auth.issuer
        self._leeway = auth.leeway
        self._max_lifetime = auth.max_token_lifetime
        require = ["exp", "sub", "iat"]
        require += ["aud"] if auth.audience is not None else []
        require += ["iss"] if auth.issuer is not None else []
        self._options: jwt.types.Options = {"require": require}
        self._clock = clock
        self._verified: dict[str, tuple[str, float]] = {}  # token -> (subject, valid until)

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
        verified = self._verified.get(token)
        if verified is not None and self._clock() < verified[1]:
            return self._subject_is(verified[0], access_key)
        return self._subject_is(self._decode(token), access_key)

    def _decode(self, token: str) -> Any:
        """The subject of a token that passes every check (remembered), or :class:`Unauthenticated`."""
        key = self._key_of(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                options=self._options,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(self._reason(exc)) from exc
        _check_claim_types(claims)
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > self._max_lifetime:
            raise Unauthenticated(
                f"token lifetime (exp - iat = {lifetime}s) exceeds the limit of {self._max_lifetime:.0f}s"
            )
        if len(self._verified) >= self.CACHE_TOKENS:
            self._verified.clear()
        self._verified[token] = (claims["sub"], claims["exp"] + self._leeway)
        return claims["sub"]

    @staticmethod
    def _subject_is(subject: Any, access_key: str) -> str:
        if subject != access_key:
            raise Unauthenticated(
                f"token subject {quoted(subject)} does not match {ACCESS_KEY} {quoted(access_key)}"
            )
        return access_key

    def _key_of(self, token: str) -> VerifyingKey:
        """The key for this token's header: its algorithm must be allowed, its ``kid`` known."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            allowed = ", ".join(self._algorithms)
            raise Unauthenticated(f"token algorithm {quoted(str(algorithm))} is not allowed (allowed: {allowed})")
        kid = header.get("kid")
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("token lacks a 'kid' header" if kid is None else f"unknown key id {quoted(kid)}")
        return key

    def _reason(self, exc: jwt.InvalidTokenError) -> str:
        """A precise, client-facing reason for a rejected token."""
        if isinstance(exc, jwt.InvalidSignatureError):
            return "token signature is invalid"
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "token has expired"
        if isinstance(exc, jwt.ImmatureSignatureError):
            if "(iat)" in str(exc):
                return "token was issued in the future ('iat')"
            return "token is not valid yet ('nbf')"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"token lacks the {exc.claim!r} claim"
        if isinstance(exc, jwt.InvalidAudienceError):
            if self._audience is None:
                return "token has an audience but the gateway expects none"
            return f"token audience is not {self._audience!r}"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"token issuer is not {self._issuer!r}"
        if isinstance(exc, InvalidSubjectError):
            return "token 'sub' claim is not a string"
        if isinstance(exc, (jwt.DecodeError, jwt.InvalidIssuedAtError, InvalidJTIError)):
            return f"malformed token: {exc}"
        return f"invalid token: {exc}"


MALFORMED = "malformed_claim"  # the auth failures' reason label of the checks below
_TIME_CLAIMS = ("exp", "iat", "nbf")


def _json_type(value: object) -> str:
    """A JSON value's type, as a client would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _check_claim_types(claims: dict[str, Any]) -> None:
    """:class:`Unauthenticated` naming the claim when a time claim is not a finite number of seconds.

    PyJWT takes what ``int()`` takes (``"1700000000"``, ``true``) and compares that, but the
    lifetime bound and the token cache compute with the claims themselves."""
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Unauthenticated(
                f"malformed token: its {name!r} claim is {_json_type(value)}, not a number of seconds since the epoch",
                reason=MALFORMED,
            )
        if not math.isfinite(value):
            raise Unauthenticated(f"malformed token: its {name!r} claim is not a finite number", reason=MALFORMED)


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
