"""The root of every error Sluice raises on purpose.

Each error says whether retrying can help (``retriable``) and, where there is one, what to do
about it (``hint``), so callers write ``if exc.retriable`` instead of matching types. That is the
one way to mark an error retriable, as in aiokafka: a class sets ``retriable = True``; only an
error whose retriability is known at run time (the client's ``ClientError``, by the gRPC status
received) sets it on the instance.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base class of Sluice errors."""

    retriable: bool = False  # whether the same call may succeed later

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigurationError(SluiceError):
    """A setting is missing or has an unusable value."""
