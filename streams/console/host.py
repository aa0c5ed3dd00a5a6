"""What the console needs of the worker that serves it (so the console does not import the worker)."""

from __future__ import annotations

from typing import Any, Protocol

from sluice.keys import JsonKeyStore
from sluice.settings import Settings
from sluice.streams.config import ConfigFollower
from sluice.streams.query_api import QueryApi
from sluice.streams.reader import Reader


class ConsoleHost(Protocol):
    """A worker: its Faust app and raw topic, settings, key configurations, reads and counters."""

    app: Any
    raw: Any
    settings: Settings
    keys: JsonKeyStore
    config: ConfigFollower
    reader: Reader
    query_api: QueryApi

    def status(self) -> dict[str, Any]: ...
