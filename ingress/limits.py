"""Byte-rate limits per access key: token buckets refilled at ``bytes_per_second``.

The limit is applied in the call handler, after authentication and validation, rather than in
a gRPC interceptor: it needs the caller's access key (known only once the token is verified)
and the size of what it sent (known only once a request message is read), and an interceptor
would have to repeat both.

A limit slows a client down to it, never below: a whole request (a unary ``Send``, an HTTP
body, an OTLP export) either fits and is charged, or is refused uncharged with the seconds until
it fits (:meth:`ByteRateLimiter.admit`); a stream is not refused at all but held until its
next message fits (:meth:`ByteRateLimiter.pace`), so it is read no faster than the limit and
gRPC's flow control pushes back on the client. What a call was charged for and did not get
stored is given back (:meth:`ByteRateLimiter.refund`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sluice.ingress.exceptions import RateLimited
from sluice.ingress.metrics import GatewayMetrics
from sluice.keys import AccessKeyConfig, Limits


class ByteRateLimiter:
    """Token buckets per key, holding up to ``bytes_burst`` bytes (one second's worth by default).

    A request needs the whole of its size in the bucket, or a full bucket when it is larger
    than the burst (so no request is refused for ever); taking it may leave the bucket below
    zero, and that debt delays the requests after it.
    """

    def __init__(
        self,
        metrics: GatewayMetrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _level(self, access_key: str, rate: int, burst: float) -> tuple[float, float]:
        """The key's tokens now, and now."""
        now = self._clock()
        tokens, at = self._buckets.get(access_key, (burst, now))
        return min(burst, tokens + (now - at) * rate), now

    def take(self, access_key: str, nbytes: int, limits: Limits) -> float:
        """0.0 if ``nbytes`` may pass now (and they are taken), else seconds until they may
        (and nothing is taken)."""
        rate = limits.bytes_per_second
        if rate <= 0:
            return 0.0
        burst = float(limits.bytes_burst or rate)
        tokens, now = self._level(access_key, rate, burst)
        need = min(float(nbytes), burst)
        if tokens < need:
            self._buckets[access_key] = (tokens, now)
            return (need - tokens) / rate
        self._buckets[access_key] = (tokens - nbytes, now)
        return 0.0

    def reserve(self, access_key: str, nbytes: int, limits: Limits) -> float:
        """Take ``nbytes`` now, in line behind earlier reservations; the seconds until they may
        pass (0.0: at once). Callers wait that long, or :meth:`refund` what they give up."""
        rate = limits.bytes_per_second
        if rate <= 0:
            return 0.0
        burst = float(limits.bytes_burst or rate)
        tokens, now = self._level(access_key, rate, burst)
        need = min(float(nbytes), burst)
        self._buckets[access_key] = (tokens - nbytes, now)
        return max(0.0, (need - tokens) / rate)

    def refund(self, access_key: str, nbytes: int, limits: Limits) -> None:
        """Give back ``nbytes`` taken for what was not stored after all."""
        rate = limits.bytes_per_second
        if rate <= 0 or nbytes <= 0 or access_key not in self._buckets:
            return
        burst = float(limits.bytes_burst or rate)
        tokens, now = self._level(access_key, rate, burst)
        self._buckets[access_key] = (min(burst, tokens + nbytes), now)

    def admit(self, config: AccessKeyConfig, nbytes: int) -> None:
        """Charge a whole request of ``nbytes``, or raise :class:`RateLimited` (counted, nothing
        charged) with the seconds until it fits."""
        key = config.access_key
        wait = self.take(key, nbytes, config.limits)
        if wait:
            if self._metrics is not None:
                self._metrics.rate_limited.labels(key).inc()
            raise RateLimited(
                f"access key {key!r} is over its limit of {config.limits.bytes_per_second} bytes/s; "
                f"retry in {wait:.2f}s",
                retry_after=wait,
            )

    async def pace(
        self,
        config: AccessKeyConfig,
        nbytes: int,
        *,
        before_wait: Callable[[float], Awaitable[None]] | None = None,
    ) -> float:
        """Charge a stream's next ``nbytes``, waiting until they fit (after ``before_wait(wait)``,
        if it must wait); the seconds waited. A wait cut short (the call fails or is cancelled)
        gives the bytes back."""
        key = config.access_key
        wait = self.reserve(key, nbytes, config.limits)
        if not wait:
            return 0.0
        if self._metrics is not None:
            self._metrics.rate_delayed.labels(key).inc(wait)
        try:
            if before_wait is not None:
                await before_wait(wait)
            await self._sleep(wait)
        except BaseException:
            self.refund(key, nbytes, config.limits)
            raise
        return wait
