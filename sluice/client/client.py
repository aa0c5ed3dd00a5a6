"""``SluiceClient``: send envelopes to a gateway and read the access key's configuration."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from sluice.client import grpc_patch
from sluice.client.exceptions import ClientError
from sluice.client.retry import RetryPolicy, Retrying
from sluice.client.stream import OnAck, StreamSender
from sluice.keys import validate_access_key
from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from sluice.wire import ACCESS_KEY, AUTHORIZATION

T = TypeVar("T")

grpc_patch.install()

Batches = AsyncIterable[Iterable[Envelope]] | Iterable[Iterable[Envelope]]


class SluiceClient:
    """An async client of one gateway, for one access key and its token.

    Use it inside a running event loop (the gRPC channel is opened on first use) and
    ``await close()`` it, or use ``async with``. ``timeout`` is the deadline of each unary call
    attempt in seconds (None = none); streams have no deadline. Calls failing with a retriable
    status are retried as ``retry`` says (default ``RetryPolicy()``;
    ``RetryPolicy.never()`` to fail at once). Failed calls raise :class:`ClientError`.
    """

    def __init__(
        self,
        target: str,
        access_key: str,
        token: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
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
        self.retry = retry if retry is not None else RetryPolicy()
        self._metadata = ((AUTHORIZATION, f"Bearer {token}"), (ACCESS_KEY, access_key))
        self._credentials = credentials
        self._timeout = timeout
        self._options = _with_reconnect_backoff(list(options), self.retry.max_backoff)
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
        """Run a unary call, again after each retriable failure while the retry policy allows."""
        retrying = self.retry.start()
        while True:
            try:
                return await invoke()
            except grpc.aio.AioRpcError as exc:
                error = ClientError.from_rpc_error(exc)
            await retrying.failed(error)

    async def send(self, envelopes: Iterable[Envelope]) -> int:
        """Send one batch (unary ``Send``, retried as a whole); the number of envelopes stored.

        A retried batch may be stored twice if an earlier attempt was stored but its answer
        lost (at-least-once).
        """
        self._open()
        request = EnvelopeBatch(batch=envelopes)
        response: ingress_pb2.SendResponse = await self._call(
            lambda: self._ingress.Send(request, metadata=self._metadata, timeout=self._timeout)
        )
        return response.accepted

    async def send_stream(
        self,
        batches: Batches,
        *,
        max_stream_envelopes: int = 10_000,
        max_stream_seconds: float | None = None,
        on_ack: OnAck | None = None,
    ) -> int:
        """Stream batches (``BatchSender``); the number of envelopes stored over all calls.

        The client keeps what it sent until the gateway acknowledges it, so a stream is cut into
        calls of at most ``max_stream_envelopes`` envelopes and ``max_stream_seconds`` seconds.
        A call broken by a retriable error is followed by one resending only what the gateway
        did not acknowledge (``x-accepted``); everything of that call when it did not say
        (at-least-once). ``on_ack(n)`` is told each time ``n`` more envelopes, in order, are
        settled. On failure :class:`ClientError`'s ``accepted`` counts all calls (None if the
        last one did not say).
        """
        self._open()
        source = batches if isinstance(batches, AsyncIterable) else _aiter(batches)
        sender = StreamSender(
            lambda requests: self._ingress.BatchSender(requests, metadata=self._metadata),
            source,
            self.retry.start(),
            max_envelopes=max_stream_envelopes,
            max_seconds=max_stream_seconds,
            on_ack=on_ack,
        )
        return await sender.run()

    async def get_config(self, access_key: str = "") -> config_pb2.AgentConfigResponse:
        """The configuration of this client's access key (``access_key`` empty or the same)."""
        self._open()
        request = config_pb2.GetConfigRequest(access_key=access_key)
        response: config_pb2.AgentConfigResponse = await self._call(
            lambda: self._config.GetConfig(request, metadata=self._metadata, timeout=self._timeout)
        )
        return response

    async def watch_config(
        self, access_key: str = "", *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[config_pb2.AgentConfigResponse]:
        """The key's configuration now, then each time it changes (``WatchConfig``), for ever.

        A broken watch is re-opened after the backoff of ``retry`` (default: the client's);
        what the new watch repeats of the last configuration yielded is skipped. Refusals and
        used-up retries raise :class:`ClientError`.
        """
        self._open()
        request = config_pb2.GetConfigRequest(access_key=access_key)
        retrying: Retrying = (retry or self.retry).start()
        last: config_pb2.AgentConfigResponse | None = None
        while True:
            call = self._config.WatchConfig(request, metadata=self._metadata)
            try:
                async for response in call:
                    retrying.progressed()
                    if response != last:
                        last = response
                        yield response
                error = ClientError(grpc.StatusCode.UNAVAILABLE, "the gateway ended the watch")
            except grpc.aio.AioRpcError as exc:
                error = ClientError.from_rpc_error(exc)
            finally:
                call.cancel()
            await retrying.failed(error)

    async def close(self) -> None:
        """Close the channel; in-flight calls are cancelled."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> SluiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _aiter(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def _with_reconnect_backoff(options: list[tuple[str, Any]], max_seconds: float) -> list[tuple[str, Any]]:
    """``options`` plus reconnect backoffs bounded like the retries, unless set: gRPC's own go up
    to 120 s, and calls fail at once while a channel waits to reconnect to a gateway that is back."""
    ms = max(100, int(max_seconds * 1000))
    given = {name for name, _ in options}
    defaults = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", ms),
    ]
    return options + [(name, value) for name, value in defaults if name not in given]
