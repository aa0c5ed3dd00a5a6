"""Access keys: who may send, and how their data is limited and routed."""

from sluice.keys.exceptions import AccessKeyError, InvalidAccessKey, UnknownAccessKey
from sluice.keys.models import DEFAULT_ROUTES, AccessKeyConfig, Limits, validate_access_key
from sluice.keys.store import AccessKeyStore, JsonKeyStore, generate_access_key

__all__ = [
    "DEFAULT_ROUTES",
    "AccessKeyConfig",
    "AccessKeyError",
    "AccessKeyStore",
    "InvalidAccessKey",
    "JsonKeyStore",
    "Limits",
    "UnknownAccessKey",
    "generate_access_key",
    "validate_access_key",
]
