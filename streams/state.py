"""Window and position state in a Faust table, written to the changelog partition of its source
partition.

Faust picks a table write's changelog partition from the event being processed; window state
is also written from the timer that closes quiet windows, where there is no event. So this
adapter writes the store and the changelog itself, always naming the source partition: a
worker that takes over a partition recovers exactly that partition's windows.

Values are JSON (orjson: several times faster than json on window rows), encoded here once: the table (created with :func:`state_table`) keeps them as
bytes in its store and its changelog alike, which holds open windows in a fraction of the
memory the decoded lists would take.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def state_table(app: Any, name: str, partitions: int) -> Any:
    """A table of str keys and raw (JSON-encoded) values for :class:`FaustTableState`."""
    return app.Table(name, partitions=partitions, key_type=str, value_type=bytes)  # bytes: the "raw" codec


SYNC_KEY = "@sync"


class FaustTableState:
    """:class:`sluice.streams.windows.WindowState` over a Faust ``Table`` from :func:`state_table`."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._written: set[int] = set()  # changelog partitions written since the last sync()

    def get(self, key: str) -> list[Any] | None:
        value = self.table.data.get(key)
        return None if value is None else list(orjson.loads(value))

    def put(self, partition: int, key: str, value: list[Any]) -> None:
        encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)  # sketches have int keys
        store = self.table.data
        db_for_partition = getattr(store, "_db_for_partition", None)
        if db_for_partition is None:  # the memory store
            store[key] = encoded
        else:
            # The rocksdb store keeps a database per partition and takes the partition of a
            # write from the event being processed; these writes come from batch jobs and the
            # timer, outside any event, so they name it themselves (faust-streaming 0.15).
            raw_key = store._encode_key(key)
            db_for_partition(partition).put(raw_key, encoded)
            store._key_index[raw_key] = partition
        self.table.send_changelog(partition, key, encoded)
        self._written.add(partition)

    def delete(self, partition: int, key: str) -> None:
        self.table.data.pop(key, None)
        self.table.send_changelog(partition, key, None)
        self._written.add(partition)

    def sync(self) -> int:
        """End each changelog partition written since the last call with a record of its own
        (a tombstone of :data:`SYNC_KEY`); call it after the producer flushed, then flush again.

        Tansu reports a partition's end offset as the base offset of its last record batch plus
        one, and Faust recovers a table only up to the end offset it is told: every record after
        the first of the last batch would be missing from the recovered table. A record alone in
        the last batch moves that loss onto itself. Returns the partitions synced.
        """
        written, self._written = self._written, set()
        for partition in written:
            self.table.send_changelog(partition, SYNC_KEY, None)
        return len(written)

    def keys(self) -> Iterable[str]:
        return list(self.table.data.keys())
