"""Errors of the client SDK."""

from __future__ import annotations

import grpc

from sluice.exceptions import SluiceError
from sluice.wire import ACCEPTED

# Statuses after which the same call may succeed later.
RETRIABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)


class ClientError(SluiceError):
    """A call failed: ``code`` is the gRPC status, ``details`` the server's message.

    ``accepted`` is the number of envelopes the gateway had stored before a failing send,
    when it said so (trailing metadata ``x-accepted``), else None.
    """

    def __init__(self, code: grpc.StatusCode, details: str, *, accepted: int | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.accepted = accepted
        self.retriable = code in RETRIABLE_CODES

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> ClientError:
        """The error a failed call raised, with its status, details and ``x-accepted`` trailer."""
        accepted = None
        for key, value in exc.trailing_metadata() or ():
            if key == ACCEPTED and str(value).isdigit():
                accepted = int(value)
        return cls(exc.code(), exc.details() or "", accepted=accepted)
