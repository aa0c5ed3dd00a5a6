"""HTTP writes: Influx line protocol (``POST /api/v2/write``, ``POST /write``) and Prometheus
remote write (``POST /api/v1/write``), on ``protocols.http_listen``.

Authentication is the native one: a JWT whose ``sub`` is the access key, sent as
``Authorization: Bearer <JWT>`` or, as Influx clients do, ``Authorization: Token <JWT>`` (v1 also
takes it as the ``p`` query parameter). ``x-access-key`` may name the key; without it the token's
subject does, and is then verified like any other. Influx's ``org``, ``bucket`` and ``db``
parameters are accepted and ignored: the access key is the tenant. Errors answer with the status the native
API's gRPC code maps to; a body with some malformed or invalid lines stores the others and
answers 400 with the first error, as InfluxDB does.

Bodies are decompressed here, not by aiohttp: Influx writes may be ``gzip`` or ``deflate``, remote
writes are ``snappy``; a body that is not what its ``Content-Encoding`` says, or an encoding the
endpoint does not take, is answered 400 naming it (aiohttp would answer a bare 400 and log a
traceback), and decompression stops at ``max_body_bytes``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable

import grpc
import jwt
from aiohttp import web

from sluice.exceptions import SluiceError
from sluice.ingress.auth import Authenticator
from sluice.ingress.exceptions import IngressError, RateLimited, Unauthenticated, grpc_status
from sluice.ingress.protocols import influx, remote_write
from sluice.ingress.protocols.ingest import Ingest
from sluice.ingress.protocols.lines import Malformed
from sluice.keys import AccessKeyConfig
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


_ZLIB = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}


def decompressed(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (``gzip``, ``deflate``, ``identity`` or none),
    at most ``max_bytes`` of it; :class:`Malformed` naming what is wrong otherwise."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _ZLIB:
        raise Malformed(
            f"unsupported Content-Encoding {encoding[:40]!r}; expected gzip, deflate or identity", reason="encoding"
        )
    decoder = zlib.decompressobj(_ZLIB[encoding])
    try:
        out = decoder.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise Malformed(f"the body is not valid {encoding} data: {exc}", reason="encoding") from exc
    if len(out) > max_bytes:
        raise Malformed(f"the decompressed body exceeds {max_bytes} bytes", reason="too_large")
    if not decoder.eof:
        raise Malformed(f"the {encoding} body is truncated", reason="encoding")
    if decoder.unused_data:
        raise Malformed(f"{len(decoder.unused_data)} byte(s) follow the {encoding} data", reason="encoding")
    return out


def _error(status: int, message: str, code: str = "invalid", headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


def error_response(exc: SluiceError) -> web.Response:
    """The HTTP answer to a failed write."""
    if isinstance(exc, Malformed):
        return _error(400, str(exc))
    status = _STATUS.get(exc.code, 500) if isinstance(exc, IngressError) else (503 if exc.retriable else 500)
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, RateLimited) else None
    code = {401: "unauthorized", 403: "forbidden", 429: "too many requests", 503: "unavailable"}.get(status, "internal error")
    return _error(status, str(exc), "invalid" if status == 400 else code, headers)


class HttpWrites:
    """The aiohttp application and its site; ``await start()``, ``await stop()``."""

    def __init__(
        self, host: str, port: int, authenticator: Authenticator, ingest: Ingest, *, max_body_bytes: int
    ) -> None:
        self._host, self.port = host, port
        self._authenticator = authenticator
        self._ingest = ingest
        self._max_body = max_body_bytes
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_post("/api/v2/write", self._influx_write)
        self.app.router.add_post("/write", self._influx_write)
        self.app.router.add_post("/api/v1/write", self._remote_write)
        self.app.router.add_get("/ping", self._ping)  # Influx clients' and Telegraf's health check
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, auto_decompress=False)
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
        if scheme.lower() == "token":
            scheme = "Bearer"
        if not token and request.query.get("p"):
            scheme, token = "Bearer", request.query["p"]
        key = request.headers.get(ACCESS_KEY)
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

    async def _handle(
        self,
        request: web.Request,
        entry_point: str,
        work: Callable[[AccessKeyConfig, bytes], Awaitable[web.Response]],
    ) -> web.Response:
        """Authenticate, read the body, ``work``; every answer that is an error counts as a rejected call."""
        metrics = self._ingest.metrics
        try:
            config = self._authenticate(request)
            try:
                body = await request.read()
            except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body is not in
                raise Malformed(f"cannot read the body: {str(exc).strip()}", reason="body") from exc
            response = await work(config, body)
        except SluiceError as exc:
            log.debug("refused %s %s: %s", request.method, request.path, exc)
            metrics.reject_call(entry_point, grpc_status(exc))
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            metrics.reject_call(entry_point, grpc.StatusCode.RESOURCE_EXHAUSTED)  # gRPC's code for it
            raise
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
            parsed = influx.parse(decompressed(body, request.headers.get("Content-Encoding", ""), self._max_body), precision)
            for reason, _ in parsed.malformed:
                self._ingest.metrics.malformed.labels("influx", reason).inc()
            admitted = await self._ingest.publish(config, parsed.envelopes, INFLUX)
            errors = [m for _, m in parsed.malformed] + ([admitted.error] if admitted.error else [])
            if errors:
                rejected = len(parsed.malformed) + len(admitted.rejected)
                return _error(400, f"partial write: {rejected} rejected, {admitted.accepted} stored; first: {errors[0]}")
            return web.Response(status=204)

        return await self._handle(request, INFLUX, work)

    async def _remote_write(self, request: web.Request) -> web.Response:
        async def work(config: AccessKeyConfig, body: bytes) -> web.Response:
            encoding = request.headers.get("Content-Encoding", "snappy").strip().lower()
            if encoding not in ("snappy", "", "identity"):  # the body is snappy whatever the header says
                raise Malformed(f"unsupported Content-Encoding {encoding[:40]!r}; remote write is snappy", reason="encoding")
            parsed = remote_write.parse(body, max_bytes=self._max_body)
            for reason, n in parsed.skipped.items():
                self._ingest.metrics.malformed.labels("remote_write", reason).inc(n)
            admitted = await self._ingest.publish(config, parsed.envelopes, REMOTE_WRITE)
            if admitted.rejected:
                return _error(400, f"{len(admitted.rejected)} samples rejected; first: {admitted.error}")
            return web.Response(status=204)

        return await self._handle(request, REMOTE_WRITE, work)
