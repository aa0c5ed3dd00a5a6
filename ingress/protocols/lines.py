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


INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


def digits(text: str, what: str, *, limit: int = 20) -> int:
    """``text`` as a non-negative integer of ASCII digits (no sign, ``_`` or other scripts' digits),
    :class:`Malformed` (reason ``timestamp``) otherwise or when it has more than ``limit`` digits."""
    if not (text.isascii() and text.isdigit()):
        raise Malformed(f"{what} {text[:40]!r} is not an integer", reason="timestamp")
    if len(text) > limit:
        raise Malformed(f"{what} {text[:40]!r} is out of range", reason="timestamp")
    return int(text)


def epoch_nanoseconds(value: int, what: str) -> int:
    """``value`` if it fits an envelope's timestamp (int64 nanoseconds), :class:`Malformed` otherwise."""
    if not 0 <= value <= INT64_MAX:
        raise Malformed(f"{what} is out of range (nanoseconds since the epoch must fit in int64)", reason="timestamp")
    return value
