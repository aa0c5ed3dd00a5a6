"""Per-key quotas: calls and streams one access key may hold open at once.

``max_concurrent_rpcs`` bounds the gateway as a whole, so without these one key holding idle
streams could fill it and lock every other key out. A call over its key's quota is refused at
once (RESOURCE_EXHAUSTED naming the quota, with a ``retry-after``, counted), before any of its
requests is read; the other keys' calls are not affected. The buffer's share per key is
enforced by the :class:`~sluice.ingress.buffer.Diode`, with the same error.
"""

from __future__ import annotations

import grpc

from sluice.ingress.exceptions import RateLimited
from sluice.ingress.metrics import GatewayMetrics
from sluice.settings import GatewaySettings

# A slot frees when another call of the key ends, which the gateway cannot foresee.
QUOTA_RETRY_AFTER = 1.0


class QuotaExceeded(RateLimited):
    """An access key is at one of its quotas (``quota``: calls, streams or buffer). Answered
    like the byte rate (RESOURCE_EXHAUSTED, ``retry-after``; HTTP 429, ``Retry-After``)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "quota"

    def __init__(self, message: str, *, quota: str, retry_after: float = QUOTA_RETRY_AFTER) -> None:
        super().__init__(f"{message}; retry in {retry_after:g}s", retry_after=retry_after)
        self.quota = quota


class Slot:
    """The calls (and streams) a call holds of its key's quotas, until :meth:`release`."""

    def __init__(self, quotas: KeyQuotas, access_key: str, streaming: bool) -> None:
        self._quotas = quotas
        self.access_key = access_key
        self.streaming = streaming
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._quotas._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class KeyQuotas:
    """Counts the calls and streams open per access key against ``max_calls_per_key`` and
    ``max_streams_per_key``."""

    def __init__(self, gateway: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.max_calls = gateway.max_calls_per_key
        self.max_streams = gateway.max_streams_per_key
        self._metrics = metrics
        self._calls: dict[str, int] = {}
        self._streams: dict[str, int] = {}

    def open(self, access_key: str, *, streaming: bool) -> Slot:
        """A slot for one more call of ``access_key`` (and one more stream if ``streaming``), or
        :class:`QuotaExceeded` (counted) when the key is at its quota."""
        if streaming and self._streams.get(access_key, 0) >= self.max_streams:
            raise self.refuse(
                access_key, "streams",
                f"access key {access_key!r} has {self.max_streams} streams open, its quota "
                "(gateway.max_streams_per_key)",
            )
        if self._calls.get(access_key, 0) >= self.max_calls:
            raise self.refuse(
                access_key, "calls",
                f"access key {access_key!r} has {self.max_calls} calls open, its quota (gateway.max_calls_per_key)",
            )
        self._calls[access_key] = self._calls.get(access_key, 0) + 1
        if streaming:
            self._streams[access_key] = self._streams.get(access_key, 0) + 1
        return Slot(self, access_key, streaming)

    def refuse(self, access_key: str, quota: str, message: str) -> QuotaExceeded:
        """The error refusing a call of ``access_key`` at ``quota``, counted."""
        self._metrics.quota_refused.labels(access_key, quota).inc()
        return QuotaExceeded(message, quota=quota)

    def open_calls(self, access_key: str) -> tuple[int, int]:
        """Calls and streams of ``access_key`` open now."""
        return self._calls.get(access_key, 0), self._streams.get(access_key, 0)

    def _release(self, slot: Slot) -> None:
        _decrement(self._calls, slot.access_key)
        if slot.streaming:
            _decrement(self._streams, slot.access_key)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
