"""What the line protocols share: a malformed line is a :class:`Malformed` with a reason label."""

from __future__ import annotations

from sluice.exceptions import SluiceError


class Malformed(SluiceError):
    """One line of statsd or Influx line protocol that cannot be parsed; ``reason`` labels the counter."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, hint=None)
        self.reason = reason
