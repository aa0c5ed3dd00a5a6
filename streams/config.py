"""Access-key configurations followed live from the compacted topic ``kafka.config_topic``.

Every worker reads every partition of the topic from the beginning and then keeps following
it, so a key's routes and limits change while the worker runs. Until the topic holds a record
(absent or empty) the JSON key file is used instead: it is what bootstraps a new installation.

This is a plain consumer task rather than a Faust ``GlobalTable``: a record that is not a
valid configuration must be logged and skipped (in a table's recovery it would stop the
worker), the file fallback needs to know whether the topic holds anything at all, and the
topic is created and compacted by whoever writes it, not by the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from sluice.keys.exceptions import KeyStoreCorrupt
from sluice.keys.models import AccessKeyConfig
from sluice.keys.topic import decode_config

log = logging.getLogger(__name__)

Lookup = Callable[[str], AccessKeyConfig | None]


class ConfigFollower:
    """The latest configuration of every access key on the config topic."""

    def __init__(self, bootstrap: str, topic: str, fallback: Lookup, *, poll_interval: float = 1.0) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        self.bootstrap = bootstrap
        self.topic = topic
        self._fallback = fallback
        self._poll_interval = poll_interval
        self.configs: dict[str, AccessKeyConfig] = {}
        self.records = 0
        self.invalid = 0
        self.loaded = asyncio.Event()  # set once what the topic held at start has been read

    def get(self, access_key: str) -> AccessKeyConfig | None:
        """The key's configuration: from the topic once it holds records, else from the file."""
        if self.records:
            return self.configs.get(access_key)
        return self._fallback(access_key)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Take one record of the topic into account (a tombstone deletes the key)."""
        self.records += 1
        try:
            if key is None:
                raise KeyStoreCorrupt("config record without a key")
            config = decode_config(key, value)
        except KeyStoreCorrupt as exc:
            self.invalid += 1
            log.error("skipping a record of %s: %s", self.topic, exc)
            return
        name = key.decode()
        if config is None:
            self.configs.pop(name, None)
        else:
            self.configs[name] = config

    def status(self) -> dict[str, object]:
        return {
            "source": "topic" if self.records else "file",
            "records": self.records,
            "invalid": self.invalid,
            "keys": len(self.configs),
        }

    async def run(self) -> None:
        """Follow the topic until cancelled; retries when the broker is unavailable (records read
        again then are applied again, which changes nothing: the latest record of a key wins)."""
        while True:
            try:
                await self._follow()
            except KafkaError as exc:
                log.warning("following %s failed (%s); retrying", self.topic, exc)
                await asyncio.sleep(self._poll_interval)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            while True:
                await consumer.topics()  # refreshes the metadata
                partitions = consumer.partitions_for_topic(self.topic)
                if partitions:
                    break
                self.loaded.set()  # no topic yet: the file is the configuration
                await asyncio.sleep(self._poll_interval)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    for record in batch:
                        self.apply(record.key, record.value)
                if not self.loaded.is_set() and all(
                    [await consumer.position(tp) >= end for tp, end in ends.items()]
                ):
                    self.loaded.set()
        finally:
            await consumer.stop()
