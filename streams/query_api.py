"""The worker's HTTP query API, ``POST /query``: who may read what, and the answer to a request.

A request carries ``Authorization: Bearer <credential>`` and a JSON body, one of

    {"sql": "SELECT ...", "parameters": {...}}   raw read-only SQL: the admin credential only
    {"scoped": {"stream": "metrics", "key": K, ...}}   one key's data (see ``scoped.build``):
        that key's access token (the gateway's JWTs) or the admin credential

A token names its key by its ``sub`` (an ``x-access-key`` header, when sent, must match it).
Answers: 200 ``{"columns", "rows"}``, else ``{"error": reason}`` with 400 (malformed request,
failed query), 401 (no or invalid credential), 403 (another key's data, raw SQL without the admin
credential, a statement that is not read-only), 408 (``query.timeout``), 422 (``max_result_rows``,
``max_memory_bytes``), 429 (``max_concurrent`` busy for ``queue_timeout``) or 503 (stopping).
Each answer is counted by its outcome (``queries_<outcome>`` in the worker's counters).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from sluice.exceptions import ConfigurationError
from sluice.ingress.auth import TokenVerifier
from sluice.ingress.exceptions import Unauthenticated
from sluice.keys.models import AccessKeyConfig
from sluice.settings import Settings
from sluice.streams import scoped
from sluice.streams.reader import Reader, ReadRefused, Result
from sluice.wire import ACCESS_KEY, AUTHORIZATION

log = logging.getLogger(__name__)

ADMIN = None  # the caller a credential names when it is the admin credential
OUTCOMES = (
    "ok", "bad_request", "unauthenticated", "forbidden", "readonly", "failed", "timed_out", "too_large",
    "busy", "cancelled", "unavailable",
)
_BODY = 'expected a JSON object {"sql": "...", "parameters": {...}} or {"scoped": {"stream": ..., "key": ...}}'


class Refused(Exception):
    """A request answered with ``status`` and this message; counted as ``outcome``."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class QueryApi:
    """Answers ``/query`` requests: authenticates, authorizes, and reads with ``reader``;
    ``keys`` looks up a key's configuration (unknown or disabled keys read nothing)."""

    def __init__(self, settings: Settings, reader: Reader, keys: Callable[[str], AccessKeyConfig | None]) -> None:
        admin = settings.query.admin_token
        self._admin = _digest(admin.get_secret_value()) if admin is not None else None
        try:
            self._verifier: TokenVerifier | None = TokenVerifier(settings.auth)
        except ConfigurationError as exc:
            log.warning("the query API takes only the admin credential: %s", exc)
            self._verifier = None
        self._database = settings.clickhouse.database
        self._reader = reader
        self._keys = keys
        self.counts: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})

    def counters(self) -> dict[str, int]:
        """Answers so far by outcome, as ``queries_<outcome>``."""
        return {f"queries_{outcome}": n for outcome, n in self.counts.items()}

    def refuse(self, refused: Refused) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of a refusal, counted."""
        self.counts[refused.outcome] += 1
        return refused.status, {"error": str(refused)}

    async def answer(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body answering a request with these headers and body."""
        try:
            columns, rows = await self._answer(headers, body)
        except Refused as exc:
            return self.refuse(exc)
        except ReadRefused as exc:
            return self.refuse(Refused(exc.status, exc.outcome, exc.message))
        self.counts["ok"] += 1
        return 200, {"columns": columns, "rows": rows}

    async def _answer(self, headers: Mapping[str, str], body: bytes) -> Result:
        # Who is asking comes first: without a credential, not even the body's shape is told.
        caller = self.caller(headers.get(AUTHORIZATION), headers.get(ACCESS_KEY))
        request = _parse(body)
        if "sql" in request:
            if caller is not ADMIN:
                raise Refused(403, "forbidden", f"raw SQL needs the admin credential; the token of key {caller!r} "
                              "reads only that key's metrics, logs and events")
            return await self._reader.query(request["sql"], request.get("parameters"))
        try:
            query = scoped.build(self._database, request["scoped"])
        except ValueError as exc:
            raise Refused(400, "bad_request", str(exc)) from exc
        key = request["scoped"]["key"]
        if caller is not ADMIN and caller != key:
            raise Refused(403, "forbidden", f"the token of key {caller!r} may not read key {key!r}")
        return await self._reader.query(query.sql, query.parameters)

    def caller(self, authorization: str | None, access_key: str | None) -> str | None:
        """The access key a credential belongs to, or :data:`ADMIN`; :class:`Refused` (401, 403)."""
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Refused(401, "unauthenticated", "missing or malformed 'Authorization' header: expected "
                          "'Bearer <token>' (a key's access token, or the admin credential for raw SQL)")
        if self._admin is not None and hmac.compare_digest(_digest(credential), self._admin):
            return ADMIN
        if self._verifier is None:
            raise Refused(401, "unauthenticated", "the credential is not the admin credential, and no JWT key "
                          "is configured to verify access tokens with")
        try:
            claimed = access_key or _subject(credential)
            key = self._verifier.verify(f"Bearer {credential}", claimed)
        except Unauthenticated as exc:
            raise Refused(401, "unauthenticated", exc.message) from exc
        except (TypeError, ValueError) as exc:  # claims of the wrong type
            raise Refused(401, "unauthenticated", f"malformed token claims: {exc}") from exc
        config = self._keys(key)
        if config is None or not config.enabled:
            raise Refused(403, "forbidden", f"access key {key!r} is {'unknown' if config is None else 'disabled'}")
        return key


def _digest(secret: str) -> bytes:
    """Compared in constant time, digests of equal length also hide the admin credential's length."""
    return hashlib.sha256(secret.encode()).digest()


def _subject(token: str) -> str:
    """The ``sub`` a token claims (verified afterwards by the verifier, with everything else)."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"malformed token: {exc}") from exc
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("token lacks a string 'sub' claim naming its access key")
    return sub


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _parse(body: bytes) -> dict[str, Any]:
    """The request's JSON object, checked for shape; :class:`Refused` (400)."""
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise Refused(400, "bad_request", f"{_BODY}: {exc}") from exc
    if not isinstance(request, dict) or ("sql" in request) == ("scoped" in request):
        raise Refused(400, "bad_request", _BODY)
    if "sql" in request:
        if not isinstance(request["sql"], str) or not request["sql"].strip():
            raise Refused(400, "bad_request", "'sql' must be a non-empty string")
        parameters = request.get("parameters") or {}
        if not isinstance(parameters, dict) or not all(_scalar(v) or (
            isinstance(v, list) and all(_scalar(x) for x in v)) for v in parameters.values()):
            raise Refused(400, "bad_request", "'parameters' must be an object of strings, numbers, booleans, "
                          "nulls or lists of them")
        if set(request) - {"sql", "parameters"}:
            raise Refused(400, "bad_request", f"unknown fields: {sorted(set(request) - {'sql', 'parameters'})}")
    elif not isinstance(request["scoped"], dict) or set(request) != {"scoped"}:
        raise Refused(400, "bad_request", _BODY)
    return request
