"""Helpers of the gateway integration tests: read a topic back, build envelopes and metadata."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Iterable

from prometheus_client.parser import text_string_to_metric_families
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from sluice.kafka import read_to_end
from sluice.client import counter_envelope, gauge_envelope
from sluice.ingress import issue_token
from sluice.keys import AccessKeyConfig
from sluice.keys.topic_store import ConfigTopicStore
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

CallMetadata = tuple[tuple[str, str], ...]


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the earliest offset to the current end, by partition and offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = None
        for _ in range(50):
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            await asyncio.sleep(0.1)
        assert partitions, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        async for batch in read_to_end(consumer, tps, timeout=20):
            records += batch
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def batch_of(record: ConsumerRecord) -> list[Envelope]:
    return list(EnvelopeBatch.FromString(record.value).batch)


def envelopes_of(records: Iterable[ConsumerRecord]) -> list[Envelope]:
    return [env for record in records for env in batch_of(record)]


def assert_stored(stored: list[Envelope], sent: list[Envelope], key: str, before: int, after: int) -> None:
    """``stored`` is ``sent`` with the source defaulted to the key and the receive time stamped in."""
    assert len(stored) == len(sent)
    stamps = [got.timestamp for got, env in zip(stored, sent) if env.timestamp == 0]
    assert stamps == sorted(stamps)
    assert all(before <= t <= after for t in stamps)
    expected = []
    for env, got in zip(sent, stored):
        copy = Envelope()
        copy.CopyFrom(env)
        copy.source_id = copy.source_id or key
        copy.timestamp = copy.timestamp or got.timestamp
        expected.append(copy)
    assert stored == expected


def counters(n: int, start: int = 0) -> list[Envelope]:
    return [counter_envelope("events", i, source_id="app") for i in range(start, start + n)]


def nan_gauge() -> Envelope:
    return gauge_envelope({"cpu": (float("nan"), "%"), "mem": (1.0, "B")})


async def add_key(keys: ConfigTopicStore, key: str, **config: object) -> str:
    await keys.put(AccessKeyConfig(access_key=key, **config))  # type: ignore[arg-type]
    return key


async def singles(envelopes: Iterable[Envelope]) -> AsyncIterator[Envelope]:
    for env in envelopes:
        yield env


def metadata_for(
    settings: Settings, key: str, *, token_key: str | None = None, now: float | None = None
) -> CallMetadata:
    """Call metadata for ``key`` with a fresh token (for ``token_key`` if given, issued at ``now``)."""
    token = issue_token(settings.auth, token_key or key, 60, now=now)
    return (("authorization", f"Bearer {token}"), ("x-access-key", key))


MetricSamples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> MetricSamples:
    """Every sample of a /metrics endpoint, as Prometheus' own parser reads it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
