"""Access keys on the compacted config topic: the one source of truth every gateway follows.

:class:`ConfigTopicStore` reads the topic from the beginning, then keeps following it, so a
change written by any gateway or by ``sluice keys`` applies everywhere within a poll interval.
:meth:`ConfigTopicStore.put` waits until its own write has been read back, so a caller sees it.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from sluice.kafka import KafkaUnavailable, ensure_topics
from sluice.keys.exceptions import KeyStoreCorrupt, UnknownAccessKey
from sluice.keys.models import AccessKeyConfig
from sluice.keys.topic import decode_config, encode_config

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}


class ConfigTopicStore:
    """:class:`sluice.keys.AccessKeyStore` over ``topic``; ``await start()`` before use."""

    def __init__(self, bootstrap: str, topic: str, *, replication_factor: int = 1, poll_ms: int = 200) -> None:
        if not bootstrap:
            raise ValueError("bootstrap must name a Kafka broker (host:port)")
        self.bootstrap = bootstrap
        self.topic = topic
        self._replication_factor = replication_factor
        self._poll_ms = poll_ms
        self._keys: dict[str, AccessKeyConfig] = {}
        self._generation = 0
        self._changed = asyncio.Condition()
        self._position = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.records = 0  # read from the topic, tombstones and corrupt ones included
        self.corrupt_records = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Create the topic if needed, read it to its current end, then follow it."""
        await ensure_topics(
            self.bootstrap, [self.topic], partitions=1,
            replication_factor=self._replication_factor, configs=COMPACTED, timeout=timeout,
        )
        tp = TopicPartition(self.topic, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=False)
        try:
            await consumer.start()
            await producer.start()
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            async with asyncio.timeout(timeout):
                while self._position < end:
                    await self._poll(consumer)
        except (KafkaError, TimeoutError) as exc:
            await consumer.stop()
            await producer.stop()
            raise KafkaUnavailable(
                f"cannot read the access keys from {self.topic!r} at {self.bootstrap}: {exc!r}",
                hint="is the broker running and is SLUICE_KAFKA_BOOTSTRAP right?",
            ) from exc
        self._consumer, self._producer = consumer, producer
        self._task = asyncio.ensure_future(self._follow(consumer))
        log.info("following %d access key(s) on %s", len(self._keys), self.topic)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except KafkaError as exc:  # the broker is gone; nothing is pending here
                    log.warning("closing the %s client failed: %r", self.topic, exc)
                except asyncio.CancelledError:
                    # aiokafka's fetcher re-raises its own cancelled fetch when the broker died.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
        self._consumer = self._producer = None

    async def __aenter__(self) -> ConfigTopicStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- reading -----------------------------------------------------------------------

    def get(self, access_key: str) -> AccessKeyConfig | None:
        return self._keys.get(access_key)

    def list(self) -> builtins.list[AccessKeyConfig]:
        return [self._keys[k] for k in sorted(self._keys)]

    async def watch(self, access_key: str) -> AsyncIterator[AccessKeyConfig]:
        """The key's configuration now (if it exists), then every new version of it."""
        last: AccessKeyConfig | None = None
        seen = -1
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._generation != seen)
                seen = self._generation
            config = self._keys.get(access_key)
            if config is not None and config != last:
                last = config
                yield config

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._poll(consumer)
            except KafkaError as exc:  # the consumer reconnects by itself; say so and go on
                log.warning("reading %s failed: %r", self.topic, exc)
                await asyncio.sleep(1)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=self._poll_ms)
        records = [r for batch in batches.values() for r in batch]
        self._apply(records)
        position = await consumer.position(TopicPartition(self.topic, 0))
        if records or position != self._position:
            self._position = position
            async with self._changed:
                self._generation += 1
                self._changed.notify_all()

    def _apply(self, records: Iterable[Any]) -> None:
        for record in records:
            self.records += 1
            key = record.key or b""
            try:
                config = decode_config(key, record.value)
            except KeyStoreCorrupt as exc:
                self.corrupt_records += 1
                log.error("skipping offset %d of %s: %s", record.offset, self.topic, exc)
                continue
            name = key.decode("utf-8", "replace")
            if config is None:
                self._keys.pop(name, None)
            else:
                self._keys[name] = config

    # -- writing -----------------------------------------------------------------------

    async def put(self, config: AccessKeyConfig) -> AccessKeyConfig:
        """Add or replace a key (its version goes up by one when it existed); returns once read back."""
        if self._producer is None:
            raise RuntimeError("ConfigTopicStore.put() called before start()")
        old = self._keys.get(config.access_key)
        config = config.model_copy(update={"version": old.version + 1 if old else config.version})
        key, value = encode_config(config)
        meta = await self._producer.send_and_wait(self.topic, value, key=key, partition=0)
        async with asyncio.timeout(30), self._changed:
            await self._changed.wait_for(lambda: self._position > meta.offset)
        return self._keys.get(config.access_key, config)

    async def update(self, access_key: str, **changes: Any) -> AccessKeyConfig:
        """Change some fields of an existing key."""
        old = self._keys.get(access_key)
        if old is None:
            raise UnknownAccessKey(f"no access key {access_key!r} on {self.topic}")
        return await self.put(AccessKeyConfig.model_validate(old.model_dump() | changes))

    async def seed(self, configs: Iterable[AccessKeyConfig]) -> builtins.list[str]:
        """Write the keys the topic does not have yet (a JSON seed file's); their names."""
        added = []
        for config in configs:
            if config.access_key not in self._keys:
                await self.put(config)
                added.append(config.access_key)
        return added
