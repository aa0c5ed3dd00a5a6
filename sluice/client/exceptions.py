"""Errors of the client SDK."""

from __future__ import annotations

import math

import grpc

from sluice.exceptions import SluiceError
from sluice.wire import ACCEPTED, RETRY_AFTER

# Statuses after which the same call may succeed later.
RETRIABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)

# What to do about a refusal that retrying cannot fix.
_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: (
        "the gateway refused the token; issue a new one for this access key with "
        "`sluice token issue --access-key KEY` and check the gateway's JWT key matches"
    ),
    grpc.StatusCode.PERMISSION_DENIED: (
        "the gateway refused this access key; check it exists and is enabled with `sluice keys list`"
    ),
}


class ClientError(SluiceError):
    """A call failed: ``code`` is the gRPC status, ``details`` the server's message.

    ``accepted`` is the number of envelopes the gateway had stored before a failing send,
    when it said so (trailing metadata ``x-accepted``), else None. ``retry_after`` is the
    number of seconds the gateway asked the client to wait (trailer ``retry-after``), else None.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        accepted: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {details}", hint=hint or _HINTS.get(code))
        self.code = code
        self.details = details
        self.accepted = accepted
        self.retry_after = retry_after
        self.retriable = code in RETRIABLE_CODES

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> ClientError:
        """The error a failed call raised, with its status, details and trailers."""
        accepted = retry_after = None
        for key, value in exc.trailing_metadata() or ():
            text = value.decode() if isinstance(value, bytes) else str(value)
            if key == ACCEPTED and text.isdigit():
                accepted = int(text)
            elif key == RETRY_AFTER:
                retry_after = _seconds(text)
        error = cls(exc.code(), exc.details() or "", accepted=accepted, retry_after=retry_after)
        error.__cause__ = exc  # raised later, after the retry policy had its say
        return error


def _seconds(text: str) -> float | None:
    """A ``retry-after`` value as seconds; None when it is not a finite number >= 0."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
