"""The gRPC services: ``sluice.v1.Ingress`` (Send, Sender, BatchSender) and ``sluice.v1.AgentConfig``.

All three ingress entry points go through :meth:`IngressServicer._ingest`: authenticate from the
call's metadata before any request message is read, validate envelopes as they arrive, publish.
Streams are published in chunks of ``gateway.stream_batch_envelopes``, so a stream of single
envelopes becomes few large records. A failing call is aborted with the error's status; after
authentication the trailing metadata ``x-accepted`` says how many envelopes (from the start of
the call) Kafka had acknowledged before the failure.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any, NoReturn, TypeVar, cast

import grpc

from sluice.exceptions import SluiceError
from sluice.ingress.accounting import CallAccount, status_of
from sluice.ingress.auth import Authenticator
from sluice.ingress.buffer import Chunk
from sluice.ingress.deadline import past_deadline
from sluice.ingress.exceptions import (
    IngressError,
    InvalidEnvelope,
    PermissionDenied,
    RateLimited,
    grpc_status,
    quoted,
)
from sluice.ingress._scan import source_ids
from sluice.ingress.frames import Forwarded, Pending
from sluice.ingress.handlers import Malformed, Received
from sluice.ingress.limits import ByteRateLimiter
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.publisher import Publisher
from sluice.shards import record_key, shard_for
from sluice.ingress.validate import EnvelopeValidator
from sluice.keys import AccessKeyConfig
from sluice.keys.topic_store import ConfigTopicStore
from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope
from sluice.wire import ACCEPTED, RETRY_AFTER

log = logging.getLogger(__name__)

_CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


async def abort(
    context: grpc.aio.ServicerContext,
    exc: SluiceError,
    entry_point: str,
    metrics: GatewayMetrics,
    *,
    accepted: int | None = None,
) -> NoReturn:
    """End the call with the status of ``exc`` (counted as a rejected call of ``entry_point``);
    ``accepted`` goes to the ``x-accepted`` trailer, a rate limit's wait to ``retry-after``."""
    code = grpc_status(exc)
    metrics.reject_call(entry_point, code)
    if code in _CLIENT_ERRORS:
        log.debug("refused call from %s: %s %s", context.peer(), code.name, exc)
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        log.warning("call from %s failed: %s", context.peer(), exc)
    else:
        log.error("call from %s failed: %s", context.peer(), exc, exc_info=exc)
    trailer: list[tuple[str, str]] = []
    if accepted is not None:
        trailer.append((ACCEPTED, str(accepted)))
    if isinstance(exc, RateLimited):
        trailer.append((RETRY_AFTER, f"{exc.retry_after:.3f}"))
    await context.abort(code, str(exc), trailing_metadata=tuple(trailer))
    raise AssertionError("unreachable: ServicerContext.abort() raises")


async def authenticate(
    authenticator: Authenticator, context: grpc.aio.ServicerContext, metrics: GatewayMetrics, entry_point: str
) -> AccessKeyConfig:
    """The caller's access-key configuration, or the call is aborted (and the failure counted)."""
    try:
        return authenticator.authenticate(context.invocation_metadata())
    except IngressError as exc:
        metrics.auth_failures.labels(exc.reason).inc()
        await abort(context, exc, entry_point, metrics)


M = TypeVar("M")


def well_formed(message: M | Malformed, where: str) -> M:
    """``message``, or INVALID_ARGUMENT when its bytes did not decode (see :mod:`.handlers`)."""
    if isinstance(message, Malformed):
        raise InvalidEnvelope(f"{where}: not a valid {message.message_type}: {message.reason}", reason="malformed")
    return message


_FLUSH = object()  # from _paced: the oldest pending envelope has waited long enough


# Decoded envelopes to validate, or the bytes of envelopes already checked (EnvelopeValidator.forward).
Request = Sequence[Envelope] | Forwarded


async def _paced(
    requests: AsyncIterator[Request], deadline: Callable[[], float | None]
) -> AsyncIterator[Request | object]:
    """``requests``, with :data:`_FLUSH` in between whenever ``deadline()`` passes in silence."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for item in requests:
                await queue.put(("item", item))
            await queue.put(("end", None))
        except Exception as exc:  # handed to the reader, which raises it
            await queue.put(("error", exc))

    reader = asyncio.ensure_future(pump())
    loop = asyncio.get_running_loop()
    try:
        while True:
            due = deadline()
            try:
                # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that arrives as
                # the item does, and a cancelled call must not reach the final flush.
                async with asyncio.timeout(None if due is None else max(0.0, due - loop.time())):
                    kind, item = await queue.get()
            except TimeoutError:
                yield _FLUSH
                continue
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


class IngressServicer(ingress_pb2_grpc.IngressServicer):
    """``sluice.v1.Ingress``: authenticate, validate, limit, publish; answer once Kafka acknowledged."""

    def __init__(
        self,
        authenticator: Authenticator,
        validator: EnvelopeValidator,
        publisher: Publisher,
        *,
        metrics: GatewayMetrics,
        limiter: ByteRateLimiter,
        stream_batch_envelopes: int,
        stream_linger: float,
    ) -> None:
        if stream_batch_envelopes < 1:
            raise ValueError(f"stream_batch_envelopes must be >= 1, got {stream_batch_envelopes}")
        if stream_linger <= 0:
            raise ValueError(f"stream_linger must be > 0, got {stream_linger}")
        self._authenticator = authenticator
        self._validator = validator
        self._publisher = publisher
        self._metrics = metrics
        self._limiter = limiter
        self._chunk = stream_batch_envelopes
        self._linger = stream_linger
        self._lanes = itertools.count()  # each call publishes through the next producer

    async def Send(
        self, request: Received, context: grpc.aio.ServicerContext
    ) -> ingress_pb2.SendResponse:
        """One batch, published as a whole."""
        account = CallAccount(self._metrics, "Send")

        async def whole() -> AsyncIterator[Request]:
            yield self._batch(request, account, malformed="request", too_long="batch")

        return await self._ingest(context, whole(), account, streaming=False)

    async def Sender(
        self, request_iterator: AsyncIterable[Envelope | Malformed], context: grpc.aio.ServicerContext
    ) -> ingress_pb2.SendResponse:
        """A stream of single envelopes, published in chunks."""
        account = CallAccount(self._metrics, "Sender")

        async def singles() -> AsyncIterator[Request]:
            index = 0
            async for envelope in request_iterator:
                account.read(1)  # one envelope, even when its bytes do not decode
                yield (well_formed(envelope, f"envelope[{index}]"),)
                index += 1

        return await self._ingest(context, singles(), account, streaming=True)

    async def BatchSender(
        self, request_iterator: AsyncIterable[Received], context: grpc.aio.ServicerContext
    ) -> ingress_pb2.SendResponse:
        """A stream of batches, published in chunks."""
        account = CallAccount(self._metrics, "BatchSender")

        async def batches() -> AsyncIterator[Request]:
            index = 0
            async for request in request_iterator:
                yield self._batch(request, account, malformed=f"batch[{index}]", too_long=f"batch[{index}]")
                index += 1

        return await self._ingest(context, batches(), account, streaming=True)

    def _batch(self, request: Received, account: CallAccount, *, malformed: str, too_long: str) -> Request:
        """A request batch, forwarded as it came when the wire-level check passes it, else decoded;
        ``malformed`` and ``too_long`` name it in those errors."""
        forwarded = self._validator.forward(request.data)
        if forwarded is not None:
            account.read(len(forwarded))
            return forwarded
        batch = well_formed(request.decode(), malformed)
        account.read(len(batch.batch))
        self._validator.check_batch_length(len(batch.batch), where=too_long)
        return batch.batch

    async def _ingest(
        self,
        context: grpc.aio.ServicerContext,
        requests: AsyncIterator[Request],
        account: CallAccount,
        *,
        streaming: bool,
    ) -> ingress_pb2.SendResponse:
        """The one path of every entry point; ``requests`` is not read before authentication.

        Envelopes are validated (and stamped) as they arrive, charged to the key's byte rate,
        and queued for Kafka ``stream_batch_envelopes`` at a time, or as soon as the oldest has
        waited ``stream_linger`` seconds; a unary ``Send`` is queued whole. The answer waits for
        Kafka's acknowledgement of everything queued (unless the buffer policy is lossy).
        ``account`` counts what becomes of every envelope read.
        """
        metrics = self._metrics
        config = await authenticate(self._authenticator, context, metrics, account.entry_point)
        key = account.access_key = config.access_key
        received = 0
        shards = config.shards
        pending: dict[int, Pending] = {}  # by shard
        since: float | None = None
        chunks: list[Chunk] = []
        loop = asyncio.get_running_loop()
        lane = next(self._lanes)
        received_bytes = metrics.received_bytes.labels(key, account.entry_point)

        async def flush(upto: int) -> None:
            nonlocal since
            for shard, queued in pending.items():
                while len(queued) >= upto and queued:
                    encoded, framed = queued.take(self._chunk)
                    chunk = await self._publisher.enqueue(
                        key, encoded, encrypt=config.encrypt, record_key=record_key(key, shard, shards),
                        framed=framed, entry_point=account.entry_point, lane=lane,
                    )
                    account.enqueued(chunk.envelopes)
                    chunks.append(chunk)
            since = loop.time() if any(map(len, pending.values())) else None

        items = _paced(requests, lambda: None if since is None else since + self._linger) if streaming else requests
        try:
            async for item in items:
                if item is _FLUSH:
                    await flush(1)
                    continue
                encoded: Sequence[bytes]
                if isinstance(item, Forwarded):
                    encoded, nbytes = item, item.nbytes
                    sources = source_ids(item.items()) if shards > 1 else []
                else:
                    envelopes = cast(Sequence[Envelope], item)  # the rest of Request (not _FLUSH)
                    encoded = self._validator.validate(envelopes, key, first_index=received)
                    nbytes = sum(map(len, encoded))
                    sources = [env.source_id for env in envelopes] if shards > 1 else []
                wait = self._limiter.take(key, nbytes, config.limits)
                if wait:
                    metrics.rate_limited.labels(key).inc()
                    raise RateLimited(
                        f"access key {key!r} is over its limit of {config.limits.bytes_per_second} bytes/s; "
                        f"retry in {wait:.2f}s",
                        retry_after=wait,
                    )
                received_bytes.inc(nbytes)
                received += len(encoded)
                if since is None:
                    since = loop.time()
                if shards > 1:
                    for source, one in zip(sources, encoded):
                        pending.setdefault(shard_for(source, shards), Pending()).add([one])
                else:
                    pending.setdefault(0, Pending()).add(encoded)
                await flush(self._chunk if streaming else sys.maxsize)
            if streaming:
                # A stream the client cancelled ends like a finished one; the cancellation is
                # delivered at the next await, before its tail is queued for Kafka.
                await asyncio.sleep(0)
                if context.cancelled():
                    raise asyncio.CancelledError
            await flush(1)
            accepted = 0
            for chunk in chunks:
                await self._publisher.wait(chunk)
                accepted += chunk.envelopes
        except SluiceError as exc:
            if isinstance(exc, InvalidEnvelope):
                metrics.invalid.labels(exc.reason).inc()
            account.fail(grpc_status(exc))
            await abort(context, exc, account.entry_point, metrics, accepted=await self._acknowledged(chunks))
        except BaseException as exc:  # cancelled (by the client or the gateway's deadline), or a bug
            code = status_of(exc, cancelled_by_client=not past_deadline())
            account.fail(code)
            metrics.reject_call(account.entry_point, code)
            raise
        return ingress_pb2.SendResponse(accepted=accepted)

    async def _acknowledged(self, chunks: Sequence[Chunk]) -> int:
        """Envelopes in the leading chunks Kafka acknowledged (waiting for those in flight)."""
        accepted = 0
        for chunk in chunks:
            try:
                await self._publisher.wait(chunk)
            except SluiceError:
                break
            accepted += chunk.envelopes
        return accepted


def config_response(config: AccessKeyConfig) -> config_pb2.AgentConfigResponse:
    """An access key's configuration as the wire message."""
    return config_pb2.AgentConfigResponse(
        access_key=config.access_key,
        enabled=config.enabled,
        shards=config.shards,
        limits=config_pb2.Limits(
            bytes_per_second=config.limits.bytes_per_second,
            events_per_second=config.limits.events_per_second,
        ),
        routes=[config_pb2.Route(stream=s, sinks=sinks) for s, sinks in sorted(config.routes.items())],
        version=config.version,
    )


class AgentConfigServicer(config_pb2_grpc.AgentConfigServicer):
    """``sluice.v1.AgentConfig``: an agent reads the configuration of its own access key."""

    def __init__(self, authenticator: Authenticator, metrics: GatewayMetrics, keys: ConfigTopicStore) -> None:
        self._authenticator = authenticator
        self._metrics = metrics
        self._keys = keys

    async def _caller(
        self, request: config_pb2.GetConfigRequest, context: grpc.aio.ServicerContext, entry_point: str
    ) -> AccessKeyConfig:
        """The caller's configuration; a call for another key's is refused."""
        config = await authenticate(self._authenticator, context, self._metrics, entry_point)
        if request.access_key and request.access_key != config.access_key:
            await abort(
                context,
                PermissionDenied(
                    f"access key {config.access_key!r} may not read the configuration of "
                    f"{quoted(request.access_key)}",
                    reason="foreign_key",
                ),
                entry_point,
                self._metrics,
            )
        return config

    async def GetConfig(
        self, request: config_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> config_pb2.AgentConfigResponse:
        return config_response(await self._caller(request, context, "GetConfig"))

    async def WatchConfig(
        self, request: config_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[config_pb2.AgentConfigResponse]:
        """The configuration now, then every new version until the client goes away."""
        config = await self._caller(request, context, "WatchConfig")
        async for version in self._keys.watch(config.access_key):
            yield config_response(version)
