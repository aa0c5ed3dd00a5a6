"""One call's share of the gateway's accounting identity (see :class:`~sluice.ingress.metrics.GatewayMetrics`).

A call counts the envelopes it reads; each one is then either handed to the publisher, whose
chunk settles it (acknowledged, dropped, spooled, or rejected when Kafka failed it), or rejected
by the call itself: refused one by one (a protocol's invalid items), or with the status the whole
call ends with (an invalid batch, the byte rate, a full buffer, a cancellation).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from sluice.exceptions import SluiceError
from sluice.ingress.exceptions import grpc_status
from sluice.ingress.metrics import GatewayMetrics


def status_of(exc: BaseException, *, cancelled_by_client: bool = True) -> grpc.StatusCode:
    """The status a call ending with ``exc`` is answered with (as gRPC answers it)."""
    if isinstance(exc, SluiceError):
        return grpc_status(exc)
    if isinstance(exc, asyncio.CancelledError):
        # The gateway's own deadline cancels a call too (see :mod:`.deadline`).
        return grpc.StatusCode.CANCELLED if cancelled_by_client else grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.UNKNOWN


class CallAccount:
    """What one call did with the envelopes it read; ``access_key`` is set once authenticated."""

    def __init__(self, metrics: GatewayMetrics, entry_point: str, access_key: str = "") -> None:
        self._metrics = metrics
        self.entry_point = entry_point
        self.access_key = access_key
        self.received = 0
        self.settled = 0  # handed to the publisher or rejected already
        self._received: Any = None  # the key's counter of envelopes read, looked up once

    def read(self, n: int) -> None:
        """``n`` more envelopes read from the caller."""
        counter = self._received
        if counter is None:
            if not self.access_key:
                raise RuntimeError("envelopes read before the call was authenticated")
            counter = self._received = self._metrics.received.labels(self.access_key, self.entry_point)
        self.received += n
        counter.inc(n)

    def enqueued(self, n: int) -> None:
        """``n`` envelopes handed to the publisher: their chunk settles them."""
        self.settled += n

    def reject(self, n: int, code: grpc.StatusCode) -> None:
        """``n`` envelopes refused with ``code`` while the call goes on."""
        self.settled += n
        self._metrics.reject_envelopes(self.access_key, self.entry_point, code, n)

    def fail(self, code: grpc.StatusCode) -> None:
        """The call ends with ``code``: every envelope read and not settled yet is rejected with it."""
        self.reject(self.received - self.settled, code)
