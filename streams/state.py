"""Window state in a Faust table, written to the changelog partition of its source partition.

Faust picks a table write's changelog partition from the event being processed; window state
is also written from the timer that closes quiet windows, where there is no event. So this
adapter writes the store and the changelog itself, always naming the source partition: a
worker that takes over a partition recovers exactly that partition's windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class FaustTableState:
    """:class:`sluice.streams.windows.WindowState` over a Faust ``Table``."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> list[Any] | None:
        value = self.table.data.get(key)
        return None if value is None else list(value)

    def put(self, partition: int, key: str, value: list[Any]) -> None:
        self.table.data[key] = value
        self.table.send_changelog(partition, key, value)

    def delete(self, partition: int, key: str) -> None:
        self.table.data.pop(key, None)
        self.table.send_changelog(partition, key, None, value_serializer="raw")

    def keys(self) -> Iterable[str]:
        return list(self.table.data.keys())
