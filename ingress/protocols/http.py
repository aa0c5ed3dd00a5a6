"""HTTP writes: Influx line protocol (``POST /api/v2/write``, ``POST /write``) and Prometheus
remote write (``POST /api/v1/write``), on ``protocols.http_listen``; OTLP/HTTP mounts its
endpoints on the same application (:mod:`.otlp_http`), and so does the Loki push API
(:mod:`.loki`), through :meth:`HttpWrites.handle`.

Authentication is the native one: a JWT whose ``sub`` is the access key, sent as
``Authorization: Bearer <JWT>`` or, as Influx clients do, ``Authorization: Token <JWT>`` (v1 also
takes it as the ``p`` query parameter), or as basic auth's password (its user names the key). ``x-access-key`` may name the key; without it the token's
subject does, and is then verified like any other. Influx's ``org``, ``bucket`` and ``db``
parameters are accepted and ignored: the access key is the tenant. Errors answer with the status the native
API's gRPC code maps to; a body with some malformed or invalid lines stores the others and
answers 400 with the first error, as InfluxDB does.

Bodies are decompressed here, not by aiohttp (see :mod:`.compression`): Influx writes may be
``gzip``, ``deflate`` or ``zstd``, remote writes are ``snappy``; a body that is not what its
``Content-Encoding`` says, or an encoding the endpoint does not take, is answered 400 naming it,
and one expanding past ``protocols.max_http_body_bytes`` 413, before it is all decompressed. Each
request reserves its decoding cost in the gateway's :class:`~sluice.ingress.decoding.DecodingBudget`
before it is decompressed (413 when it costs more than the whole budget, 503 with ``Retry-After``
when there is no room in time). The listener's own hardening is :mod:`.http_listener`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable

import grpc
import jwt
from aiohttp import web

from sluice.exceptions import SluiceError
from sluice.ingress.auth import Authenticator
from sluice.ingress.decoding import COST_FACTOR, DecodingBudget, DecodingBusy, TooLargeToDecode
from sluice.ingress.exceptions import IngressError, RateLimited, Unauthenticated, grpc_status
from sluice.ingress.protocols import influx, remote_write
from sluice.ingress.protocols.compression import INFLUX_ENCODINGS, BodyTooLarge, declared_size, decompress
from sluice.ingress.protocols.http_listener import HardenedRunner
from sluice.ingress.protocols.ingest import Ingest
from sluice.ingress.protocols.lines import Malformed
from sluice.keys import AccessKeyConfig
from sluice.settings import ProtocolsSettings
from sluice.wire import ACCESS_KEY, AUTHORIZATION

log = logging.getLogger(__name__)

INFLUX = "Influx.HTTP"  # the entry points in the metrics
REMOTE_WRITE = "RemoteWrite"

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def json_error(status: int, message: str, code: str = "invalid", headers: dict[str, str] | None = None) -> web.Response:
    """An error answer: JSON ``{"code", "message"}``."""
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


class UnsupportedMediaType(IngressError):
    """A body whose ``Content-Type`` the endpoint does not decode (HTTP 415)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "content_type"


class BodyTimeout(IngressError):
    """The body did not arrive within ``protocols.body_timeout`` (HTTP 408)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "body_timeout"


def error_status(exc: SluiceError) -> tuple[int, str, dict[str, str] | None]:
    """The HTTP status of a failed write, a word naming it, and its headers (``Retry-After``)."""
    if isinstance(exc, Malformed):
        return 400, "invalid", None
    if isinstance(exc, (BodyTooLarge, TooLargeToDecode)):
        return 413, "too large", None
    if isinstance(exc, DecodingBusy):
        return 503, "unavailable", {"Retry-After": str(max(1, round(exc.retry_after)))}
    if isinstance(exc, BodyTimeout):
        return 408, "timeout", None
    if isinstance(exc, UnsupportedMediaType):
        return 415, "unsupported media type", None
    status = _STATUS.get(exc.code, 500) if isinstance(exc, IngressError) else (503 if exc.retriable else 500)
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, RateLimited) else None
    code = {401: "unauthorized", 403: "forbidden", 429: "too many requests", 503: "unavailable"}.get(status, "internal error")
    return status, "invalid" if status == 400 else code, headers


def error_response(exc: SluiceError) -> web.Response:
    """The HTTP answer to a failed write: JSON ``{"code", "message"}``."""
    status, code, headers = error_status(exc)
    return json_error(status, str(exc), code, headers)


class HttpWrites:
    """The aiohttp application and its site; ``await start()``, ``await stop()``."""

    def __init__(
        self, host: str, port: int, authenticator: Authenticator, ingest: Ingest, *,
        settings: ProtocolsSettings, decoding: DecodingBudget,
    ) -> None:
        self._host, self.port = host, port
        self._authenticator = authenticator
        self._ingest = ingest
        self._settings = settings
        self._max_body = settings.max_http_body_bytes
        self._decoding = decoding
        # Bounds the (compressed) body aiohttp reads; decompression is bounded in .compression.
        self.app = web.Application(client_max_size=self._max_body)
        self.app.router.add_post("/api/v2/write", self._influx_write)
        self.app.router.add_post("/write", self._influx_write)
        self.app.router.add_post("/api/v1/write", self._remote_write)
        self.app.router.add_get("/ping", self._ping)  # Influx clients' and Telegraf's health check
        self._runner: web.AppRunner | None = None

    @property
    def ingest(self) -> Ingest:
        """The admission path the writes go through."""
        return self._ingest

    async def start(self) -> None:
        refused = self._ingest.metrics.http_refused
        self._runner = HardenedRunner(
            self.app, header_timeout=self._settings.header_timeout, refused=lambda reason: refused.labels(reason).inc(),
            access_log=None, auto_decompress=False,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("HTTP writes on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    def _authenticate(self, request: web.Request) -> AccessKeyConfig:
        scheme, _, token = request.headers.get(AUTHORIZATION, "").partition(" ")
        token = token.strip()
        key = request.headers.get(ACCESS_KEY)
        if scheme.lower() == "token":
            scheme = "Bearer"
        elif scheme.lower() == "basic":  # user: the access key, password: the JWT
            try:
                user, _, token = base64.b64decode(token, validate=True).decode().partition(":")
            except ValueError:
                raise Unauthenticated("malformed basic credentials: expected base64 of <access key>:<JWT>") from None
            scheme, key = "Bearer", key or user
        if not token and request.query.get("p"):
            scheme, token = "Bearer", request.query["p"]
        if not key and token:
            try:
                key = str(jwt.decode(token, options={"verify_signature": False}).get("sub", ""))
            except jwt.InvalidTokenError as exc:
                raise Unauthenticated(f"malformed token: {exc}") from exc
        metadata = [(AUTHORIZATION, f"{scheme} {token}" if token else ""), (ACCESS_KEY, key or "")]
        try:
            return self._authenticator.authenticate(metadata)
        except IngressError as exc:
            self._ingest.metrics.auth_failures.labels(exc.reason).inc()
            raise

    async def _read(self, request: web.Request) -> bytes:
        """The (compressed) body, at most ``max_http_body_bytes`` of it, within ``body_timeout``."""
        try:
            async with asyncio.timeout(self._settings.body_timeout):
                return await request.read()
        except TimeoutError:
            self._ingest.metrics.http_refused.labels("body_timeout").inc()
            raise BodyTimeout(
                f"the body did not arrive within protocols.body_timeout ({self._settings.body_timeout:g}s)"
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge("identity", self._max_body) from None  # as sent, before any decompression
        except web.RequestPayloadError as exc:  # e.g. a truncated chunked body
            raise Malformed(f"cannot read the body: {str(exc).strip()}", reason="body") from exc

    async def handle(
        self,
        request: web.Request,
        entry_point: str,
        encoding: str,
        accepted: tuple[str, ...],
        work: Callable[[AccessKeyConfig, bytes], Awaitable[web.Response]],
        errors: Callable[[SluiceError], web.Response] = error_response,
    ) -> web.Response:
        """Authenticate, read the body, reserve its decoding cost, decompress it and ``work`` on
        it; a failure is answered by ``errors``. Every answer that is an error counts as a
        rejected call. The decoding cost is the entry point's
        :data:`~sluice.ingress.decoding.COST_FACTOR` times the decoded size."""
        metrics = self._ingest.metrics
        what, factor = f"{entry_point} request", COST_FACTOR[entry_point]
        try:
            config = self._authenticate(request)
            body = await self._read(request)
            size = declared_size(body, encoding)
            if size is not None and size > self._max_body:
                raise BodyTooLarge(encoding, self._max_body, size)
            # Decompressing needs room for its output; parsing, for the objects of every item.
            async with self._decoding.reserve(self._max_body if size is None else size * factor, what) as held:
                raw = decompress(body, encoding, self._max_body, accepted)
                del body
                await held.resize(len(raw) * factor)
                response = await work(config, raw)
        except SluiceError as exc:
            log.debug("refused %s %s: %s", request.method, request.path, exc)
            if isinstance(exc, (BodyTooLarge, TooLargeToDecode, DecodingBusy)):
                metrics.decoding_refused.labels(entry_point, exc.reason).inc()
            metrics.reject_call(entry_point, grpc_status(exc))
            response = errors(exc)
            if isinstance(exc, BodyTimeout):
                response.force_close()  # what is left of the body is not read
            return response
        if response.status >= 400:  # a partial write
            metrics.reject_call(entry_point, grpc.StatusCode.INVALID_ARGUMENT)
        return response

    async def _influx_write(self, request: web.Request) -> web.Response:
        async def work(config: AccessKeyConfig, body: bytes) -> web.Response:
            precision = request.query.get("precision", "ns")
            if precision not in influx.PRECISIONS:
                raise Malformed(
                    f"unknown precision {precision!r}; expected one of {sorted(influx.PRECISIONS)}", reason="precision"
                )
            parsed = influx.parse(body, precision)
            for reason, _ in parsed.malformed:
                self._ingest.metrics.malformed.labels("influx", reason).inc()
            admitted = await self._ingest.publish(config, parsed.envelopes, INFLUX)
            errors = [m for _, m in parsed.malformed] + ([admitted.error] if admitted.error else [])
            if errors:
                rejected = len(parsed.malformed) + len(admitted.rejected)
                return json_error(400, f"partial write: {rejected} rejected, {admitted.accepted} stored; first: {errors[0]}")
            return web.Response(status=204)

        encoding = request.headers.get("Content-Encoding", "")
        return await self.handle(request, INFLUX, encoding, INFLUX_ENCODINGS, work)

    async def _remote_write(self, request: web.Request) -> web.Response:
        async def work(config: AccessKeyConfig, body: bytes) -> web.Response:
            parsed = remote_write.parse(body)
            for reason, n in parsed.skipped.items():
                self._ingest.metrics.malformed.labels("remote_write", reason).inc(n)
            admitted = await self._ingest.publish(config, parsed.envelopes, REMOTE_WRITE)
            if admitted.rejected:
                return json_error(400, f"{len(admitted.rejected)} samples rejected; first: {admitted.error}")
            return web.Response(status=204)

        encoding = request.headers.get("Content-Encoding", "snappy").strip().lower()
        if encoding in ("", "identity"):  # the body is snappy whatever the header says
            encoding = "snappy"
        return await self.handle(request, REMOTE_WRITE, encoding, ("snappy",), work)
