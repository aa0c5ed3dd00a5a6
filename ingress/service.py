"""The gRPC services: ``sluice.v1.Ingress`` (Send, Sender, BatchSender) and ``sluice.v1.AgentConfig``.

All three ingress entry points go through :meth:`IngressServicer._ingest`: authenticate from the
call's metadata before any request message is read, validate envelopes as they arrive, publish.
Streams are published in chunks of ``gateway.stream_batch_envelopes``, so a stream of single
envelopes becomes few large records. A failing call is aborted with the error's status; after
authentication the trailing metadata ``x-accepted`` says how many envelopes (from the start of
the call) Kafka had acknowledged before the failure.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import NoReturn

import grpc

from sluice.exceptions import SluiceError
from sluice.ingress.auth import Authenticator
from sluice.ingress.exceptions import PermissionDenied, grpc_status, quoted
from sluice.ingress.publisher import Publisher
from sluice.ingress.validate import EnvelopeValidator
from sluice.keys import AccessKeyConfig
from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from sluice.wire import ACCEPTED

log = logging.getLogger(__name__)

_CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


async def abort(
    context: grpc.aio.ServicerContext, exc: SluiceError, *, accepted: int | None = None
) -> NoReturn:
    """End the call with the status of ``exc``; ``accepted`` goes to the ``x-accepted`` trailer."""
    code = grpc_status(exc)
    if code in _CLIENT_ERRORS:
        log.debug("refused call from %s: %s %s", context.peer(), code.name, exc)
    elif code == grpc.StatusCode.UNAVAILABLE:
        log.warning("call from %s failed: %s", context.peer(), exc)
    else:
        log.error("call from %s failed: %s", context.peer(), exc, exc_info=exc)
    trailer = () if accepted is None else ((ACCEPTED, str(accepted)),)
    await context.abort(code, str(exc), trailing_metadata=trailer)
    raise AssertionError("unreachable: ServicerContext.abort() raises")


async def authenticate(
    authenticator: Authenticator, context: grpc.aio.ServicerContext
) -> AccessKeyConfig:
    """The caller's access-key configuration, or the call is aborted."""
    try:
        return authenticator.authenticate(context.invocation_metadata())
    except SluiceError as exc:
        await abort(context, exc)


class IngressServicer(ingress_pb2_grpc.IngressServicer):
    """``sluice.v1.Ingress``: authenticate, validate, publish; answer once Kafka acknowledged."""

    def __init__(
        self,
        authenticator: Authenticator,
        validator: EnvelopeValidator,
        publisher: Publisher,
        *,
        stream_batch_envelopes: int,
    ) -> None:
        if stream_batch_envelopes < 1:
            raise ValueError(f"stream_batch_envelopes must be >= 1, got {stream_batch_envelopes}")
        self._authenticator = authenticator
        self._validator = validator
        self._publisher = publisher
        self._chunk = stream_batch_envelopes

    async def Send(
        self, request: EnvelopeBatch, context: grpc.aio.ServicerContext
    ) -> ingress_pb2.SendResponse:
        """One batch, published as a whole."""

        async def whole() -> AsyncIterator[Sequence[Envelope]]:
            self._validator.check_batch_length(len(request.batch))
            yield request.batch

        return await self._ingest(context, whole(), chunk=None)

    async def Sender(
        self, request_iterator: AsyncIterable[Envelope], context: grpc.aio.ServicerContext
    ) -> ingress_pb2.SendResponse:
        """A stream of single envelopes, published in chunks."""

        async def singles() -> AsyncIterator[Sequence[Envelope]]:
            async for envelope in request_iterator:
                yield (envelope,)

        return await self._ingest(context, singles(), chunk=self._chunk)

    async def BatchSender(
        self, request_iterator: AsyncIterable[EnvelopeBatch], context: grpc.aio.ServicerContext
    ) -> ingress_pb2.SendResponse:
        """A stream of batches, published in chunks."""

        async def batches() -> AsyncIterator[Sequence[Envelope]]:
            index = 0
            async for batch in request_iterator:
                self._validator.check_batch_length(len(batch.batch), where=f"batch[{index}]")
                index += 1
                yield batch.batch

        return await self._ingest(context, batches(), chunk=self._chunk)

    async def _ingest(
        self,
        context: grpc.aio.ServicerContext,
        requests: AsyncIterator[Sequence[Envelope]],
        *,
        chunk: int | None,
    ) -> ingress_pb2.SendResponse:
        """The one path of every entry point; ``requests`` is not read before authentication.

        Envelopes are validated (and stamped) as they arrive and published ``chunk`` at a time,
        or all together at the end when ``chunk`` is None.
        """
        config = await authenticate(self._authenticator, context)
        key = config.access_key
        size = chunk or sys.maxsize
        received = accepted = 0
        pending: list[bytes] = []
        try:
            async for envelopes in requests:
                pending += self._validator.validate(envelopes, key, first_index=received)
                received += len(envelopes)
                while len(pending) >= size:
                    accepted += await self._publisher.publish(key, pending[:size])
                    del pending[:size]
            accepted += await self._publisher.publish(key, pending)
        except SluiceError as exc:
            await abort(context, exc, accepted=accepted)
        return ingress_pb2.SendResponse(accepted=accepted)


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

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def GetConfig(
        self, request: config_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> config_pb2.AgentConfigResponse:
        config = await authenticate(self._authenticator, context)
        if request.access_key and request.access_key != config.access_key:
            await abort(
                context,
                PermissionDenied(
                    f"access key {config.access_key!r} may not read the configuration of "
                    f"{quoted(request.access_key)}"
                ),
            )
        return config_response(config)
