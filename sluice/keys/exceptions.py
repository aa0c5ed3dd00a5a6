"""Errors of the access-key store."""

from sluice.exceptions import SluiceError


class AccessKeyError(SluiceError):
    """Base class of access-key errors."""


class InvalidAccessKey(AccessKeyError):
    """The key's text is not a valid access key."""


class UnknownAccessKey(AccessKeyError):
    """No such key in the store."""


class KeyStoreCorrupt(AccessKeyError):
    """The store's file cannot be read as access-key configurations."""
