"""Kafka plumbing shared by the gateway, the worker and the CLI: topics and reading them.

What a raw-topic record holds (headers, content types) is :mod:`sluice.records`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from sluice.exceptions import SluiceError

log = logging.getLogger(__name__)

class KafkaUnavailable(SluiceError):
    """The broker did not answer or did not acknowledge in time."""

    retriable = True


async def ensure_topics(
    bootstrap: str,
    topics: list[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                try:
                    await admin.create_topics(
                        [NewTopic(t, partitions, replication_factor, topic_configs=configs or {}) for t in missing]
                    )
                except TopicAlreadyExistsError:
                    pass
                log.info("created topics %s with %d partitions", missing, partitions)
            return
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise KafkaUnavailable(
        f"could not create topics {topics} on {bootstrap}: {last!r}",
        hint="is the broker running and is SLUICE_KAFKA_BOOTSTRAP right?",
    )


def ensure_topics_sync(bootstrap: str, topics: list[str], *, partitions: int, replication_factor: int = 1) -> None:
    """:func:`ensure_topics` for callers outside an event loop."""
    asyncio.run(
        ensure_topics(bootstrap, topics, partitions=partitions, replication_factor=replication_factor)
    )


async def read_to_end(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], *, timeout: float = 30.0
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Records of the assigned ``tps`` from their positions to the end, batch by batch.

    The end is each partition's high watermark as the fetch responses report it: an empty poll
    alone does not prove the end was reached (the first fetch may just be slow).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        batches = await consumer.getmany(*tps, timeout_ms=200)
        for records in batches.values():
            yield records
        if not batches:
            behind = [
                tp for tp in tps
                if (hw := consumer.highwater(tp)) is None or await consumer.position(tp) < hw
            ]
            if not behind:
                return
        if loop.time() > deadline:
            raise KafkaUnavailable(f"reading {tps} did not reach the end within {timeout:g}s")


async def records_since(
    consumer: AIOKafkaConsumer, topic: str, since: float
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Every record of ``topic`` appended since ``since`` (unix seconds) up to its end, batch by
    batch, read by ``consumer`` (started, without a group)."""
    await consumer.topics()  # refreshes the metadata
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not tps:
        raise SluiceError(f"topic {topic!r} does not exist", hint="is SLUICE_KAFKA_RAW_TOPIC right?")
    consumer.assign(tps)
    starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
    for tp in tps:
        found: Any = starts.get(tp)  # OffsetAndTimestamp, or None when nothing is that recent
        if found is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, found.offset)
    async for records in read_to_end(consumer, tps):
        yield records
