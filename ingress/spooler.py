"""The ``spool`` policy at work: chunks Kafka failed (or had no room for) go to the disk
:class:`Spool` and are acknowledged once fsynced; a replay task hands them to Kafka in spool
order when it answers again. While anything is spooled, new chunks are spooled too, so they
do not overtake what waits on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sluice.exceptions import SluiceError
from sluice.ingress.buffer import Chunk
from sluice.ingress.exceptions import grpc_status
from sluice.ingress.metrics import GatewayMetrics
from sluice.shards import access_key_of
from sluice.ingress.spool import Spool

log = logging.getLogger(__name__)

Send = Callable[[bytes, list[bytes], str], Awaitable[None]]


class Spooler:
    """Owns a :class:`Spool`, its I/O thread and its replay task."""

    def __init__(self, spool: Spool, metrics: GatewayMetrics, *, backoff: float = 0.5, max_backoff: float = 5.0) -> None:
        self.spool = spool
        self._metrics = metrics
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._backoff, self._max_backoff = backoff, max_backoff
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.active = not spool.empty
        self._reported_corrupt = 0

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def start(self, send: Send, idle: Callable[[], bool]) -> None:
        """Replay with ``send`` whenever ``idle()`` says nothing else is in flight to Kafka."""
        self._task = asyncio.ensure_future(self._replay(send, idle))
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._io.shutdown(wait=True)

    async def add(self, chunk: Chunk) -> None:
        """Spool ``chunk`` durably and resolve it; its ``done`` fails if the spool is full."""
        try:
            await self._run(self.spool.append, chunk.key, chunk.records, chunk.envelopes, chunk.kid)
        except SluiceError as exc:
            self._metrics.reject_envelopes(access_key_of(chunk.key), chunk.entry_point, grpc_status(exc), chunk.envelopes)
            if not chunk.done.done():
                chunk.done.set_exception(exc)
            return
        self.active = True
        self._metrics.spooled.inc(chunk.envelopes)
        await self._update_gauges()
        if not chunk.done.done():
            chunk.done.set_result(None)
        self._wake.set()

    async def _update_gauges(self) -> None:
        size, age, corrupt = await self._run(
            lambda: (self.spool.size, self.spool.oldest_age(), self.spool.corrupt_segments)
        )
        self._metrics.spool_bytes.set(size)
        self._metrics.spool_oldest_age.set(age)
        if corrupt > self._reported_corrupt:
            self._metrics.spool_corrupt.inc(corrupt - self._reported_corrupt)
            self._reported_corrupt = corrupt

    async def _replay(self, send: Send, idle: Callable[[], bool]) -> None:
        delay = self._backoff
        while True:
            await self._wake.wait()
            entry = await self._run(self.spool.peek)
            await self._update_gauges()
            if entry is None:
                self.active = False
                self._wake.clear()
                continue
            if not idle():  # older chunks are still with Kafka: let them land first
                await asyncio.sleep(0.05)
                continue
            try:
                await send(entry.key, entry.records, entry.kid)
            except Exception as exc:  # Kafka still away: keep it on disk and try again later
                log.warning("replaying the spool failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._max_backoff)
                continue
            delay = self._backoff
            await self._run(self.spool.advance, entry)
            self._metrics.replayed.inc(entry.envelopes)
            self._metrics.acknowledged.labels(access_key_of(entry.key)).inc(entry.envelopes)
