"""Errors of the worker."""

from sluice.exceptions import SluiceError


class StreamsError(SluiceError):
    """Base class of worker errors."""


class DecodeError(StreamsError):
    """A record cannot be decoded; it goes to the dead-letter topic with this reason."""


class ClickHouseUnavailable(SluiceError):
    """ClickHouse did not take an insert or a query; retry later."""

    retriable = True


class QueryError(StreamsError):
    """A query was refused or failed."""


class SinkError(StreamsError):
    """A sink cannot keep its promise (its state is unreadable); the worker must not go on."""
