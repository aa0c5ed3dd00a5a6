"""Reading a client stream with two clocks: the linger of what it sent, and its silence.

:func:`paced` reads ahead one request at most, so the handler controls how fast the stream is
read (and gRPC's flow control pushes back on a client sending faster than that).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from sluice.ingress.exceptions import IngressError

T = TypeVar("T")

FLUSH = object()  # the oldest pending envelope has waited long enough
IDLE = object()  # the client sent nothing for the idle timeout; the stream ends after this


async def paced(
    requests: AsyncIterator[T], deadline: Callable[[], float | None], idle_timeout: float
) -> AsyncIterator[T | object]:
    """``requests``, with :data:`FLUSH` in between whenever ``deadline()`` passes in silence,
    and :data:`IDLE` last if the client then sends nothing for ``idle_timeout`` seconds (time
    the handler spends on a request, e.g. held to a byte rate, is not the client's silence)."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_timeout):
                        item = await anext(requests)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    await queue.put(("idle", None))
                    return
                await queue.put(("item", item))
            await queue.put(("end", None))
        except Exception as exc:  # handed to the reader, which raises it
            await queue.put(("error", exc))

    reader = asyncio.ensure_future(pump())
    loop = asyncio.get_running_loop()
    try:
        while True:
            if not queue.empty():  # a busy stream: its next request is there already, no timer needed
                kind, item = queue.get_nowait()
            else:
                due = deadline()
                try:
                    # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that arrives as
                    # the item does, and a cancelled call must not reach the final flush.
                    async with asyncio.timeout(None if due is None else max(0.0, due - loop.time())):
                        kind, item = await queue.get()
                except TimeoutError:
                    yield FLUSH
                    continue
            if kind == "end":
                return
            if kind == "error":
                raise item
            if kind == "idle":
                yield IDLE
                return
            yield item
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


class StreamIdle(IngressError):
    """The client sent nothing for ``gateway.stream_idle_timeout``: the stream is ended."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "idle"
    retriable = True
