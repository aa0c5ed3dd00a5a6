"""Access-key configurations as the worker sees them: the compacted config topic, followed live
by a :class:`~sluice.keys.topic_store.ConfigTopicStore`, once it holds a record; until then the
JSON key file, which bootstraps a new installation.

The store skips (logs and counts) a record that is not a valid configuration, so a bad write
to the topic never stops the worker, which a Faust ``GlobalTable``'s recovery would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sluice.kafka import KafkaUnavailable
from sluice.keys.models import AccessKeyConfig
from sluice.keys.topic_store import ConfigTopicStore

log = logging.getLogger(__name__)

Lookup = Callable[[str], AccessKeyConfig | None]


class ConfigFollower:
    """The latest configuration of every access key, from the topic or else from ``fallback``."""

    def __init__(
        self, bootstrap: str, topic: str, fallback: Lookup, *, replication_factor: int = 1, retry_interval: float = 1.0
    ) -> None:
        if retry_interval <= 0:
            raise ValueError(f"retry_interval must be > 0, got {retry_interval}")
        self.store = ConfigTopicStore(bootstrap, topic, replication_factor=replication_factor)
        self._fallback = fallback
        self._retry_interval = retry_interval
        self.loaded = asyncio.Event()  # set once what the topic held at start has been read

    def get(self, access_key: str) -> AccessKeyConfig | None:
        """The key's configuration: from the topic once it holds records, else from the file."""
        return self.store.get(access_key) if self.store.records else self._fallback(access_key)

    def status(self) -> dict[str, object]:
        return {
            "source": "topic" if self.store.records else "file",
            "records": self.store.records,
            "invalid": self.store.corrupt_records,
            "keys": len(self.store.list()),
        }

    async def run(self) -> None:
        """Read the topic to its end (retrying while the broker is unavailable), then follow it
        until cancelled."""
        while True:
            try:
                await self.store.start()
                break
            except KafkaUnavailable as exc:
                log.warning("%s; retrying in %.0fs", exc, self._retry_interval)
                await asyncio.sleep(self._retry_interval)
        self.loaded.set()
        try:
            await asyncio.Event().wait()
        finally:
            await self.store.stop()
