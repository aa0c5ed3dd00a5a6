"""Errors of the gateway. Each ingress error carries the gRPC status it is answered with."""

from __future__ import annotations

import grpc

from sluice.exceptions import SluiceError
from sluice.kafka import KafkaUnavailable


class IngressError(SluiceError):
    """An error a gRPC call is answered with: ``code`` is its status, the message its details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class Unauthenticated(IngressError):
    """The call's token is missing, malformed, expired or does not belong to its access key."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(IngressError):
    """The caller is authenticated but its access key is unknown, disabled or not its own."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidEnvelope(IngressError):
    """A request carries an envelope (or a batch) the gateway does not accept."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class PublishFailed(IngressError, KafkaUnavailable):
    """Kafka did not acknowledge the records in time; the client may retry the call."""

    code = grpc.StatusCode.UNAVAILABLE


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
