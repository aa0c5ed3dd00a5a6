"""Byte-rate limits per access key: token buckets refilled at ``bytes_per_second``.

The limit is applied in the call handler, after authentication and validation, rather than in
a gRPC interceptor: it needs the caller's access key (known only once the token is verified)
and the size of what it sent (known only once a request message is read), and an interceptor
would have to repeat both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sluice.keys import Limits


class ByteRateLimiter:
    """Token buckets per key. A request may take the bucket below zero (a request larger than
    the burst still passes when the bucket is full); the debt delays the next ones."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, access_key: str, nbytes: int, limits: Limits) -> float:
        """0.0 if ``nbytes`` may pass now (and they are taken), else seconds until they may."""
        rate = limits.bytes_per_second
        if rate <= 0:
            return 0.0
        burst = float(limits.bytes_burst or rate)
        now = self._clock()
        tokens, at = self._buckets.get(access_key, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        need = min(float(nbytes), burst)
        if tokens < need:
            self._buckets[access_key] = (tokens, now)
            return (need - tokens) / rate
        self._buckets[access_key] = (tokens - nbytes, now)
        return 0.0
