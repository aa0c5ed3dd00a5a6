"""A gateway-wide bound on the memory that decoding requests takes at once.

Every OTLP export and HTTP write reserves what decoding it will cost before it decompresses or
parses, and holds the reservation until the request is answered (its envelopes live that long).
The cost is the request's decoded size times :data:`COST_FACTOR` of its entry point: Python
objects of a parsed request take many times their wire size. A request that cannot get room
within the wait is refused with :class:`DecodingBusy` (retry later); one that costs more than the
whole budget with :class:`TooLargeToDecode` at once.

Freed decoding memory goes back to the OS without help: Python's objects live in arenas it unmaps
when they empty, and protobuf's and the decompressors' buffers are large enough to be mapped on
their own. After six concurrent 2.4 MiB OTLP exports and 24 Influx and remote writes, the
gateway's RSS was 19 and 27 MiB over its baseline, with or without ``malloc_trim`` (measured).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from sluice.ingress.exceptions import IngressError, RateLimited
from sluice.settings import GatewaySettings

# Bytes of memory per byte of decoded (decompressed) request, measured as the RSS growth of
# parsing a request and turning it into envelopes (100,000 gauge points with two attributes each
# for OTLP metrics: x35.6; 60,000 log records: x23.0; 50,000 spans with two attributes: x17.0;
# Influx lines of two fields and two tags: x24.3; remote write, one envelope per sample with its
# series' labels: x66.6), rounded up: their serialized copies for Kafka come on top.
COST_FACTOR = {
    "OTLP.Metrics": 40,
    "OTLP.Logs": 25,
    "OTLP.Traces": 20,
    "Influx.HTTP": 25,
    "RemoteWrite": 70,
    "Loki": 25,  # not measured: taken as OTLP logs' (a push is log lines with labels, like them)
}


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class TooLargeToDecode(IngressError):
    """A request whose decoding would cost more than the whole budget (HTTP 413)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "over_budget"


class DecodingBusy(RateLimited):
    """No room in the budget within the wait: retry after ``retry_after`` seconds (HTTP 503)."""

    reason = "decoding_busy"


class DecodingBudget:
    """At most ``max_bytes`` of decoding cost reserved at once; a reservation waits up to
    ``timeout`` seconds for room. One per gateway, shared by every protocol."""

    def __init__(self, max_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    @asynccontextmanager
    async def reserve(self, cost: int, what: str) -> AsyncIterator[Reservation]:
        """Hold ``cost`` bytes (see :meth:`Reservation.resize`) for the ``async with`` block."""
        held = Reservation(self, what)
        try:
            await held.resize(cost)
            yield held
        finally:
            held.resize_down(0)

    def _release(self, n: int) -> None:
        self.used -= n
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _take(self, n: int, what: str, holding: int) -> None:
        if holding + n > self.max_bytes:
            raise TooLargeToDecode(
                f"decoding this {what} would take about {_mib(holding + n)}, more than the gateway decodes at "
                f"once (gateway.max_decoding_bytes = {_mib(self.max_bytes)}); send smaller requests"
            )
        deadline = time.monotonic() + self.timeout
        while self.used + n > self.max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DecodingBusy(
                    f"the gateway is decoding {_mib(self.used)} of other requests and this {what} needs "
                    f"{_mib(n)} more of gateway.max_decoding_bytes ({_mib(self.max_bytes)}); retry in 1s",
                    retry_after=1.0,
                )
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                pass
        self.used += n


class Reservation:
    """The bytes one request holds of a :class:`DecodingBudget`."""

    def __init__(self, budget: DecodingBudget, what: str) -> None:
        self._budget = budget
        self._what = what
        self.held = 0

    async def resize(self, cost: int) -> None:
        """Hold ``cost`` bytes: less is given back at once, more waits for room (or is refused)."""
        if cost <= self.held:
            self.resize_down(cost)
            return
        await self._budget._take(cost - self.held, self._what, self.held)
        self.held = cost

    def resize_down(self, cost: int) -> None:
        """Give back what is held over ``cost`` bytes."""
        if cost < self.held:
            freed, self.held = self.held - cost, cost
            self._budget._release(freed)

