"""A scripted fake of the gateway's gRPC services, on a real grpc.aio server on 127.0.0.1.

Each call takes the next :class:`Failure` of ``failures`` (if any) and fails as it says;
otherwise it stores what it received. Tokens other than ``good`` are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import grpc

from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from sluice.wire import ACCEPTED, RETRY_AFTER


@dataclass
class Failure:
    """Fail a call with ``code`` after reading ``after`` envelopes (streams; 0: before reading)
    of which ``store`` are stored; the trailers carry ``x-accepted`` when ``tell`` and
    ``retry-after`` if set."""

    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    after: int = 0
    store: int = 0
    tell: bool = True
    retry_after: str | None = None


class FakeGateway(ingress_pb2_grpc.IngressServicer, config_pb2_grpc.AgentConfigServicer):
    def __init__(self) -> None:
        self.failures: list[Failure] = []
        self.stored: list[Envelope] = []
        self.calls = 0
        self.received: list[int] = []  # envelopes received per call
        # WatchConfig: what each watch call sends, then how it ends (None = stays open).
        self.watches: list[tuple[list[config_pb2.AgentConfigResponse], Failure | None]] = []

    async def _refuse(self, context: grpc.aio.ServicerContext, failure: Failure, stored: int | None) -> None:
        trailer = []
        if failure.tell and stored is not None:
            trailer.append((ACCEPTED, str(stored)))
        if failure.retry_after is not None:
            trailer.append((RETRY_AFTER, failure.retry_after))
        await context.abort(failure.code, f"fake {failure.code.name}", trailing_metadata=tuple(trailer))

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        if dict(context.invocation_metadata())["authorization"] != "Bearer good":  # type: ignore[arg-type]
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token expired")

    async def Send(self, request: EnvelopeBatch, context: grpc.aio.ServicerContext) -> ingress_pb2.SendResponse:
        await self._check(context)
        self.received.append(len(request.batch))
        if self.failures:
            await self._refuse(context, self.failures.pop(0), None)
        self.stored += request.batch
        return ingress_pb2.SendResponse(accepted=len(request.batch))

    async def BatchSender(
        self, request_iterator: AsyncIterable[EnvelopeBatch], context: grpc.aio.ServicerContext
    ) -> ingress_pb2.SendResponse:
        await self._check(context)
        failure = self.failures.pop(0) if self.failures else None
        got: list[Envelope] = []
        self.received.append(0)
        if failure is not None and failure.after == 0:  # before reading anything
            await self._refuse(context, failure, 0)
        async for batch in request_iterator:
            got += batch.batch
            self.received[-1] = len(got)
            if failure is not None and len(got) >= failure.after:
                self.stored += got[: failure.store]
                await self._refuse(context, failure, failure.store)
        self.stored += got
        return ingress_pb2.SendResponse(accepted=len(got))

    async def WatchConfig(
        self, request: config_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[config_pb2.AgentConfigResponse]:
        await self._check(context)
        responses, failure = self.watches.pop(0)
        for response in responses:
            yield response
        if failure is None:
            await asyncio.Event().wait()
        else:
            await self._refuse(context, failure, None)


async def start_fake() -> tuple[grpc.aio.Server, FakeGateway, str]:
    fake = FakeGateway()
    server = grpc.aio.server()
    ingress_pb2_grpc.add_IngressServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    config_pb2_grpc.add_AgentConfigServicer_to_server(fake, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, fake, f"127.0.0.1:{port}"
