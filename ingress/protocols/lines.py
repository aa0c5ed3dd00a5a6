"""What the line protocols share: a malformed line (or body) is a :class:`Malformed` with a reason label."""

from __future__ import annotations

import grpc

from sluice.ingress.exceptions import IngressError


class Malformed(IngressError):
    """A line of statsd or Influx line protocol, or a request body, that cannot be parsed;
    ``reason`` labels the counter. A request refused for it is answered INVALID_ARGUMENT (HTTP 400)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, reason=reason)
