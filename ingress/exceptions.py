"""Errors of the gateway. Each ingress error carries the gRPC status it is answered with."""

from __future__ import annotations

import grpc

from sluice.exceptions import SluiceError
from sluice.kafka import KafkaUnavailable


class IngressError(SluiceError):
    """An error a gRPC call is answered with: ``code`` is its status, the message its details.

    ``reason`` is a short, fixed label for metrics (the message itself varies).
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "error"

    def __init__(self, message: str, *, hint: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, hint=hint)
        if reason is not None:
            self.reason = reason


class Unauthenticated(IngressError):
    """The call's token is missing, malformed, expired or does not belong to its access key."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "invalid_token"


class PermissionDenied(IngressError):
    """The caller is authenticated but its access key is unknown, disabled or not its own."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "permission_denied"


class InvalidEnvelope(IngressError):
    """A request carries an envelope (or a batch) the gateway does not accept."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid"


class PublishFailed(IngressError, KafkaUnavailable):
    """Kafka did not acknowledge the records in time; the client may retry the call."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "kafka"


class BufferFull(IngressError):
    """The ``block`` buffer stayed full past its timeout; the client may retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "buffer_full"
    retriable = True


class SpoolFull(IngressError):
    """The ``spool`` policy's disk spool reached its size limit."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "spool_full"
    retriable = True


class RateLimited(IngressError):
    """The access key sends more bytes per second than its limit allows."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "rate_limited"
    retriable = True

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BindError(SluiceError):
    """The gateway cannot listen on its configured address."""


def quoted(text: str, limit: int = 80) -> str:
    """``text`` quoted and cut to ``limit`` characters, for messages that echo what a client sent."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def grpc_status(exc: SluiceError) -> grpc.StatusCode:
    """The status a call failing with ``exc`` is answered with."""
    if isinstance(exc, IngressError):
        return exc.code
    return grpc.StatusCode.UNAVAILABLE if exc.retriable else grpc.StatusCode.INTERNAL
