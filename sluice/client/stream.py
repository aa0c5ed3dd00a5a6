"""``BatchSender`` streams that survive broken connections.

The gateway acknowledges a stream only when it ends (``SendResponse.accepted``) or, when it
fails, with the ``x-accepted`` trailer: the number of envelopes from the start of that call it
stored. So :class:`StreamSender` keeps every envelope of the current call until it is
acknowledged, cuts the source into calls of bounded length (that bounds the memory kept and
how long data waits for an acknowledgement), and after a retriable failure opens a new call that
resends only what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from sluice.client.exceptions import ClientError
from sluice.client.retry import Retrying
from sluice.v1 import ingress_pb2
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

Batch = list[Envelope]
# Opens one BatchSender call on the given requests (the stub method with metadata bound).
OpenCall = Callable[[AsyncIterator[EnvelopeBatch]], Any]
# Told, in order, how many more envelopes of the source are settled (stored, or dropped by policy).
OnAck = Callable[[int], None]


class _End:
    """The source is exhausted (``error`` None) or failed."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Call:
    """The batches one call sent, in order; once ``closed`` its request stream takes no more.

    ``taking`` is the request stream's wait for the next batch: gRPC does not stop reading the
    request stream when a call ends, so the sender cancels that wait itself, and keeps a batch
    it got in the meantime, in order, for the next call.
    """

    def __init__(self) -> None:
        self.sent: list[Batch] = []
        self.closed = False
        self.taking: asyncio.Future[Batch | None] | None = None

    async def close(self) -> Batch | None:
        """Stop the request stream; the batch it took but did not send, if any."""
        self.closed = True
        taking, self.taking = self.taking, None
        if taking is None:
            return None
        taking.cancel()
        try:
            return await taking
        except asyncio.CancelledError:
            return None

    def count(self) -> int:
        return sum(len(b) for b in self.sent)


class StreamSender:
    """Send every batch of ``batches`` over as many ``BatchSender`` calls as it takes.

    A call ends after ``max_envelopes`` envelopes or ``max_seconds`` seconds (None: no time
    limit), and a new one starts with the next batch. When a call fails with a retriable status
    the envelopes it did not get acknowledged are resent on the next call, after the backoff of
    ``retrying`` (at least the ``retry-after`` the gateway asked for); a call that stored some
    before failing counts as progress, so a client refused again and again (a quota, a deadline)
    while its envelopes get through never gives up. Delivery is at-least-once: when a broken call says nothing of what it stored
    (no ``x-accepted`` trailer, e.g. the connection dropped), all of it is resent.
    """

    def __init__(
        self,
        open_call: OpenCall,
        batches: AsyncIterable[Iterable[Envelope]],
        retrying: Retrying,
        *,
        max_envelopes: int,
        max_seconds: float | None,
        on_ack: OnAck | None = None,
    ) -> None:
        if max_envelopes < 1:
            raise ValueError(f"max_stream_envelopes must be >= 1, got {max_envelopes}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_stream_seconds must be > 0 or None, got {max_seconds}")
        self._open_call = open_call
        self._batches = batches
        self._retrying = retrying
        self._max_envelopes = max_envelopes
        self._max_seconds = max_seconds
        self._on_ack = on_ack
        self._queue: asyncio.Queue[Batch | _End] = asyncio.Queue(maxsize=1)
        self._backlog: list[Batch] = []  # sent, not acknowledged: resent first by the next call
        self._end: _End | None = None
        self.accepted = 0

    async def run(self) -> int:
        """Send everything; the number of envelopes the gateway accepted over all calls."""
        pump = asyncio.create_task(self._pump())
        try:
            while True:
                if not self._backlog:
                    item = await self._take()
                    if item is None:
                        if self._end is not None and self._end.error is not None:
                            raise self._end.error
                        return self.accepted
                    self._backlog.append(item)
                await self._one_call()
        finally:
            pump.cancel()

    async def _pump(self) -> None:
        try:
            async for batch in self._batches:
                batch = list(batch)
                if batch:
                    await self._queue.put(batch)
        except Exception as exc:  # raised to the caller once what was sent is acknowledged
            await self._queue.put(_End(exc))
        else:
            await self._queue.put(_End())

    async def _take(self, timeout: float | None = None) -> Batch | None:
        """The next batch within ``timeout`` seconds (None: no limit); None at the end or on timeout."""
        if self._end is not None:
            return None
        try:
            if timeout is not None and timeout <= 0:
                item = self._queue.get_nowait()
            else:
                item = await asyncio.wait_for(self._queue.get(), timeout)
        except (TimeoutError, asyncio.QueueEmpty):
            return None
        if isinstance(item, _End):
            self._end = item
            return None
        return item

    async def _one_call(self) -> None:
        call = _Call()
        # What is resent belongs to the call before any of it is written: a call may fail
        # before gRPC reads its first request.
        call.sent, self._backlog = self._backlog, []
        requests = self._requests(call, list(call.sent))
        rpc = self._open_call(requests)
        error: ClientError | None = None
        try:
            response: ingress_pb2.SendResponse = await rpc
        except grpc.aio.AioRpcError as exc:
            error = ClientError.from_rpc_error(exc)
        finally:
            rpc.cancel()
            left = await call.close()
        if left is not None:
            self._backlog.append(left)
        if error is None:  # a call that ended well settles all it sent
            self._settle(call, call.count())
            self.accepted += response.accepted
            self._retrying.progressed()
            return
        if error.accepted is not None:
            self._settle(call, error.accepted)
            self.accepted += error.accepted
            if error.accepted:  # the call stored some: attempts and time are counted afresh
                self._retrying.progressed()
            error.accepted = self.accepted
        self._backlog = call.sent + self._backlog
        await self._retrying.failed(error)

    def _settle(self, call: _Call, count: int) -> None:
        """Forget the first ``count`` envelopes of ``call``: the gateway has them."""
        count = left = min(count, call.count())
        while call.sent and left >= len(call.sent[0]):
            left -= len(call.sent.pop(0))
        if call.sent and left:
            call.sent[0] = call.sent[0][left:]
        if self._on_ack is not None and count:
            self._on_ack(count)

    async def _requests(self, call: _Call, resend: list[Batch]) -> AsyncIterator[EnvelopeBatch]:
        """The requests of one call: ``resend`` (already in ``call.sent``), then new batches up
        to the limits."""
        started = time.monotonic()
        count = 0
        for batch in resend:
            count += len(batch)
            yield EnvelopeBatch(batch=batch)
        while count < self._max_envelopes:
            timeout = None
            if self._max_seconds is not None:
                timeout = max(0.0, started + self._max_seconds - time.monotonic())
            call.taking = asyncio.ensure_future(self._take(timeout))
            new = await call.taking
            call.taking = None
            if new is None or call.closed:
                return
            call.sent.append(new)
            count += len(new)
            yield EnvelopeBatch(batch=new)
