"""A server-side deadline on every call, whatever deadline (if any) the client set.

A call still running after its limit ends with DEADLINE_EXCEEDED: ``call_timeout`` for unary
calls, ``stream_timeout`` for streaming calls (``Sender``, ``BatchSender``, watches), which
legitimately last as long as the client keeps sending or watching. For streamed
responses the limit bounds the time spent producing them; a client that stops reading is
bounded by HTTP/2 flow control, keepalive and ``max_connection_age``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Handler = Any  # grpc.RpcMethodHandler, a namedtuple without type information


_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("sluice_call_deadline", default=math.inf)


def past_deadline() -> bool:
    """Whether the running call has reached the gateway's limit (its cancellation is then the
    deadline's, not the client's)."""
    return asyncio.get_running_loop().time() >= _deadline.get() - 0.001  # the timer may fire a hair early


def _expired(limit: float) -> str:
    return f"the call exceeded the gateway's limit of {limit:g}s"


def _bounded_response(behavior: Callable[..., Awaitable[Any]], limit: float) -> Callable[..., Awaitable[Any]]:
    async def bounded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _deadline.set(asyncio.get_running_loop().time() + limit)
        try:
            async with asyncio.timeout(limit):
                return await behavior(request, context)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, _expired(limit))

    return bounded


def _bounded_stream(behavior: Callable[..., AsyncIterator[Any]], limit: float) -> Callable[..., AsyncIterator[Any]]:
    async def bounded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        deadline = asyncio.get_running_loop().time() + limit
        responses = behavior(request, context)
        try:
            while True:
                # The timeout covers producing a response, never the yield: the task that
                # drives this generator is gRPC's, and a cancellation must land in here.
                try:
                    async with asyncio.timeout_at(deadline):
                        response = await anext(responses)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, _expired(limit))
                yield response
        finally:
            await responses.aclose()  # type: ignore[attr-defined]

    return bounded


class DeadlineInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Bounds every call's duration: ``call_timeout`` (unary) or ``stream_timeout`` seconds."""

    def __init__(self, call_timeout: float, stream_timeout: float) -> None:
        if not call_timeout > 0 or not stream_timeout > 0:
            raise ValueError(f"timeouts must be > 0, got {call_timeout} and {stream_timeout}")
        self._call_timeout = call_timeout
        self._stream_timeout = stream_timeout

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        streaming = handler.request_streaming or handler.response_streaming
        limit = self._stream_timeout if streaming else self._call_timeout
        kind = ("stream" if handler.request_streaming else "unary") + "_" + (
            "stream" if handler.response_streaming else "unary"
        )
        behavior = getattr(handler, kind)
        if handler.response_streaming and inspect.isasyncgenfunction(behavior):
            return handler._replace(**{kind: _bounded_stream(behavior, limit)})
        return handler._replace(**{kind: _bounded_response(behavior, limit)})
