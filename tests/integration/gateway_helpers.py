"""Helpers of the gateway integration tests: read a topic back, build envelopes and metadata, check
the gateway's accounting of every envelope against what a client sent."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Ledger:
    """The gateway's accounting of one access key's envelopes (see ``GatewayMetrics``), and the
    calls it refused (of every key: a refused call may have no key), each rejection by gRPC code."""

    received: float = 0
    acknowledged: float = 0
    dropped: float = 0
    spooled: float = 0
    replayed: float = 0
    rejected: Mapping[str, float] = field(default_factory=dict)
    refused_calls: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: MetricSamples, key: str) -> Ledger:
        def total(name: str, **match: str) -> float:
            return sum(v for (n, labels), v in samples.items()
                       if n == f"sluice_gateway_{name}_total" and match.items() <= dict(labels).items())

        def by_code(name: str, **match: str) -> dict[str, float]:
            out: dict[str, float] = {}
            for (n, labels), v in samples.items():
                if n == f"sluice_gateway_{name}_total" and match.items() <= dict(labels).items() and v:
                    out[dict(labels)["code"]] = out.get(dict(labels)["code"], 0) + v
            return out

        return cls(
            received=total("received_envelopes", access_key=key),
            acknowledged=total("acknowledged_envelopes", access_key=key),
            dropped=total("dropped_envelopes", access_key=key),
            # The spool counters have no key label: a test's gateway spools one key.
            spooled=total("spooled_envelopes"),
            replayed=total("replayed_envelopes"),
            rejected=by_code("rejected_envelopes", access_key=key),
            refused_calls=by_code("rejected_calls"),
        )

    def __sub__(self, before: Ledger) -> Ledger:
        def minus(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
            return {k: a.get(k, 0) - b.get(k, 0) for k in {*a, *b} if a.get(k, 0) != b.get(k, 0)}

        return Ledger(
            self.received - before.received, self.acknowledged - before.acknowledged, self.dropped - before.dropped,
            self.spooled - before.spooled, self.replayed - before.replayed,
            minus(self.rejected, before.rejected), minus(self.refused_calls, before.refused_calls),
        )

    @property
    def settled(self) -> float:
        """Envelopes with a fate: the right-hand side of the identity."""
        return self.acknowledged + sum(self.rejected.values()) + self.dropped + self.spooled - self.replayed

    @property
    def told_stored(self) -> float:
        """Envelopes whose callers were told they were stored: acknowledged by Kafka or the spool,
        or taken without waiting by a lossy policy (which then dropped some)."""
        return self.acknowledged + self.dropped + self.spooled - self.replayed


async def assert_accounted(
    metrics_port: int,
    key: str,
    *,
    sent: int,
    acknowledged: int,
    rejected: Mapping[str, int] | None = None,
    refused_calls: Mapping[str, int] | None = None,
    unsure: int = 0,
    since: Ledger | None = None,
    timeout: float = 30.0,
) -> Ledger:
    """Scrape the gateway's /metrics until it has settled every envelope it received, then assert
    the accounting identity ``received = acknowledged + rejected + dropped + (spooled - replayed)``
    against what the client knows: it ``sent`` that many envelopes of ``key`` (every one read by
    the gateway) and saw ``acknowledged`` of them acknowledged; ``rejected`` (by code) and
    ``refused_calls`` (by code, all keys), when given, are exact. ``unsure`` envelopes belong to
    calls answered UNAVAILABLE that Kafka may still have taken after the answer: counted stored
    by the gateway, rejected by the client. ``since`` is a ledger taken before (a shared gateway).
    """
    deadline = time.monotonic() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, metrics_port)
        ledger = Ledger.of(samples, key) - (since or Ledger())
        idle = samples.get(("sluice_gateway_buffer_bytes", ()), 0) == 0
        if idle and ledger.received == ledger.settled == sent:
            break
        assert time.monotonic() < deadline, f"the gateway did not account for {sent} envelope(s): {ledger}"
        await asyncio.sleep(0.05)
    late = ledger.told_stored - acknowledged  # stored, though the client was told otherwise
    assert 0 <= late <= unsure, f"{acknowledged} acknowledged to the client, the gateway says: {ledger}"
    assert sum(ledger.rejected.values()) == sent - acknowledged - late, ledger
    if rejected is not None:
        assert ledger.rejected == {code: n for code, n in rejected.items() if n}, ledger
    if refused_calls is not None:
        assert ledger.refused_calls == {code: n for code, n in refused_calls.items() if n}, ledger
    return ledger
