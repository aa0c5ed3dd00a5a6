"""``SluiceClient``: send envelopes to a gateway and read the access key's configuration."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc

from sluice.client.exceptions import ClientError
from sluice.keys import validate_access_key
from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from sluice.wire import ACCESS_KEY, AUTHORIZATION

T = TypeVar("T")

Batches = AsyncIterable[Iterable[Envelope]] | Iterable[Iterable[Envelope]]


class SluiceClient:
    """An async client of one gateway, for one access key and its token.

    Use it inside a running event loop (the gRPC channel is opened on first use) and
    ``await close()`` it, or use ``async with``. ``timeout`` is the deadline of unary calls
    in seconds (None = none); streams have no deadline. Failed calls raise :class:`ClientError`.
    """

    def __init__(
        self,
        target: str,
        access_key: str,
        token: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 30.0,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        if not target:
            raise ValueError("target must be host:port of a gateway, got an empty string")
        if not token:
            raise ValueError("token must not be empty: issue one with `sluice token issue`")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 or None, got {timeout}")
        self.target = target
        self.access_key = validate_access_key(access_key)
        self._metadata = ((AUTHORIZATION, f"Bearer {token}"), (ACCESS_KEY, access_key))
        self._credentials = credentials
        self._timeout = timeout
        self._options = list(options)
        self._channel: grpc.aio.Channel | None = None
        self._ingress: Any = None
        self._config: Any = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            self._ingress = ingress_pb2_grpc.IngressStub(self._channel)  # type: ignore[no-untyped-call]
            self._config = config_pb2_grpc.AgentConfigStub(self._channel)  # type: ignore[no-untyped-call]
        return self._channel

    async def _call(self, invoke: Callable[[], Awaitable[T]]) -> T:
        """Run one call and translate its failure; the place for retries and backoff."""
        try:
            return await invoke()
        except grpc.aio.AioRpcError as exc:
            raise ClientError.from_rpc_error(exc) from exc

    async def send(self, envelopes: Iterable[Envelope]) -> int:
        """Send one batch (unary ``Send``); the number of envelopes the gateway stored."""
        self._open()
        request = EnvelopeBatch(batch=envelopes)
        response: ingress_pb2.SendResponse = await self._call(
            lambda: self._ingress.Send(request, metadata=self._metadata, timeout=self._timeout)
        )
        return response.accepted

    async def send_stream(self, batches: Batches) -> int:
        """Stream batches (``BatchSender``); the number of envelopes stored when the stream ends."""
        self._open()
        requests: AsyncIterator[EnvelopeBatch] | Iterator[EnvelopeBatch]
        if isinstance(batches, AsyncIterable):
            requests = (EnvelopeBatch(batch=b) async for b in batches)
        else:
            requests = (EnvelopeBatch(batch=b) for b in batches)
        response: ingress_pb2.SendResponse = await self._call(
            lambda: self._ingress.BatchSender(requests, metadata=self._metadata)
        )
        return response.accepted

    async def get_config(self, access_key: str = "") -> config_pb2.AgentConfigResponse:
        """The configuration of this client's access key (``access_key`` empty or the same)."""
        self._open()
        request = config_pb2.GetConfigRequest(access_key=access_key)
        response: config_pb2.AgentConfigResponse = await self._call(
            lambda: self._config.GetConfig(request, metadata=self._metadata, timeout=self._timeout)
        )
        return response

    async def close(self) -> None:
        """Close the channel; in-flight calls are cancelled."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> SluiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
