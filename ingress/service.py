"""The gRPC service ``sluice.v1.Ingress`` (Send, Sender, BatchSender), and the steps every
gRPC service of the gateway shares (:func:`authenticate`, :func:`abort`).

All three ingress entry points go through :meth:`IngressServicer._ingest`: authenticate from the
call's metadata before any request message is read, take a slot of the key's quotas, validate
envelopes as they arrive, hold them to the key's byte rate, publish. Streams are published in
chunks of ``gateway.stream_batch_envelopes``, so a stream of single envelopes becomes few large
records. A failing call is aborted with the error's status; after authentication the trailing
metadata ``x-accepted`` says how many envelopes (from the start of the call) Kafka had
acknowledged before the failure.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import NoReturn, TypeVar, cast

import grpc

from sluice.exceptions import SluiceError
from sluice.ingress.accounting import CallAccount, status_of
from sluice.ingress.auth import Authenticator
from sluice.ingress.buffer import Chunk
from sluice.ingress.deadline import past_deadline
from sluice.ingress.exceptions import IngressError, InvalidEnvelope, RateLimited, grpc_status
from sluice.ingress._scan import source_ids
from sluice.ingress.frames import Forwarded, Pending
from sluice.ingress.handlers import Malformed, Received
from sluice.ingress.limits import ByteRateLimiter
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.publisher import Publisher
from sluice.ingress.quotas import KeyQuotas, QuotaExceeded
from sluice.ingress.stream_reader import FLUSH, IDLE, StreamIdle, paced
from sluice.shards import record_key, shard_for
from sluice.ingress.validate import EnvelopeValidator
from sluice.keys import AccessKeyConfig
from sluice.v1 import ingress_pb2, ingress_pb2_grpc
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
    ``accepted`` goes to the ``x-accepted`` trailer, a rate limit's or quota's wait to ``retry-after``."""
    code = grpc_status(exc)
    metrics.reject_call(entry_point, code)
    if code in _CLIENT_ERRORS or isinstance(exc, (RateLimited, StreamIdle)):  # the client's doing too
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


# Decoded envelopes to validate, or the bytes of envelopes already checked (EnvelopeValidator.forward).
Request = Sequence[Envelope] | Forwarded


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
        quotas: KeyQuotas,
        stream_batch_envelopes: int,
        stream_linger: float,
        stream_idle_timeout: float,
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
        self._quotas = quotas
        self._chunk = stream_batch_envelopes
        self._linger = stream_linger
        self._idle_timeout = stream_idle_timeout
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
        """The one path of every entry point; ``requests`` is not read before authentication,
        nor when the key is at its quotas (see :mod:`.quotas`)."""
        config = await authenticate(self._authenticator, context, self._metrics, account.entry_point)
        account.access_key = config.access_key
        try:
            slot = self._quotas.open(config.access_key, streaming=streaming)
        except QuotaExceeded as exc:
            await abort(context, exc, account.entry_point, self._metrics, accepted=0)
        with slot:
            return await self._admit(context, config, requests, account, streaming=streaming)

    async def _admit(
        self,
        context: grpc.aio.ServicerContext,
        config: AccessKeyConfig,
        requests: AsyncIterator[Request],
        account: CallAccount,
        *,
        streaming: bool,
    ) -> ingress_pb2.SendResponse:
        """Envelopes are validated (and stamped) as they arrive, charged to the key's byte rate,
        and queued for Kafka ``stream_batch_envelopes`` at a time, or as soon as the oldest has
        waited ``stream_linger`` seconds; a unary ``Send`` is queued whole. The answer waits for
        Kafka's acknowledgement of everything queued (unless the buffer policy is lossy).

        A stream over its byte rate is not read further until its last request fits (it gets
        its rate); a ``Send`` over it is refused, uncharged. A stream silent for
        ``stream_idle_timeout`` ends (DEADLINE_EXCEEDED) once what it sent is stored. Bytes
        charged for envelopes that are not stored in the end are given back to the rate.
        ``account`` counts what becomes of every envelope read.
        """
        metrics = self._metrics
        key = config.access_key
        received = 0
        charged = 0  # bytes taken from the key's byte rate
        shards = config.shards
        pending: dict[int, Pending] = {}  # by shard
        since: float | None = None
        chunks: list[Chunk] = []
        sizes: list[int] = []  # bytes of each chunk's envelopes, as charged
        loop = asyncio.get_running_loop()
        lane = next(self._lanes)
        received_bytes = metrics.received_bytes.labels(key, account.entry_point)

        async def flush(upto: int) -> None:
            nonlocal since
            taken = False
            for shard, queued in pending.items():
                while len(queued) >= upto and queued:
                    taken = True
                    encoded, framed = queued.take(self._chunk)
                    chunk = await self._publisher.enqueue(
                        key, encoded, encrypt=config.encrypt, record_key=record_key(key, shard, shards),
                        framed=framed, entry_point=account.entry_point, lane=lane,
                    )
                    account.enqueued(chunk.envelopes)
                    chunks.append(chunk)
                    sizes.append(encoded.nbytes if isinstance(encoded, Forwarded) else sum(map(len, encoded)))
            # The linger counts from the oldest pending envelope's arrival (about now for a rest).
            if not any(map(len, pending.values())):
                since = None
            elif taken:
                since = loop.time()

        async def lingered(wait: float = 0.0) -> None:
            """Publish what is pending if it would have waited its linger ``wait`` seconds from now."""
            if since is not None and loop.time() + wait >= since + self._linger:
                await flush(1)

        items = (
            paced(requests, lambda: None if since is None else since + self._linger, self._idle_timeout)
            if streaming else requests
        )
        try:
            async for item in items:
                if item is FLUSH:
                    await flush(1)
                    continue
                if item is IDLE:
                    metrics.idle_streams.labels(key).inc()
                    await flush(1)
                    raise StreamIdle(
                        f"the stream sent nothing for {self._idle_timeout:g}s (gateway.stream_idle_timeout)"
                    )
                encoded: Sequence[bytes]
                if isinstance(item, Forwarded):
                    encoded, nbytes = item, item.nbytes
                    sources = source_ids(item.items()) if shards > 1 else []
                else:
                    envelopes = cast(Sequence[Envelope], item)  # the rest of Request (not FLUSH)
                    encoded = self._validator.validate(envelopes, key, first_index=received)
                    nbytes = sum(map(len, encoded))
                    sources = [env.source_id for env in envelopes] if shards > 1 else []
                if streaming:
                    await self._limiter.pace(config, nbytes, before_wait=lingered)
                else:
                    self._limiter.admit(config, nbytes)
                charged += nbytes
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
                    await lingered()  # a stream that never falls silent (e.g. one held to its rate)
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
            accepted, stored = await self._acknowledged(chunks, sizes)
            self._limiter.refund(key, charged - stored, config.limits)
            await abort(context, exc, account.entry_point, metrics, accepted=accepted)
        except BaseException as exc:  # cancelled (by the client or the gateway's deadline), or a bug
            code = status_of(exc, cancelled_by_client=not past_deadline())
            account.fail(code)
            metrics.reject_call(account.entry_point, code)
            self._limiter.refund(key, charged - sum(sizes), config.limits)  # what was queued goes on
            raise
        return ingress_pb2.SendResponse(accepted=accepted)

    async def _acknowledged(self, chunks: Sequence[Chunk], sizes: Sequence[int]) -> tuple[int, int]:
        """Envelopes (and their bytes) in the leading chunks Kafka acknowledged, waiting for
        those in flight."""
        accepted = stored = 0
        for chunk, size in zip(chunks, sizes):
            try:
                await self._publisher.wait(chunk)
            except SluiceError:
                break
            accepted += chunk.envelopes
            stored += size
        return accepted, stored
