"""``sluice topics create|describe|grow`` and ``sluice keys top``: the raw topic's partitions,
and which access keys are hot enough to need more shards."""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import KafkaError

from sluice.cli.broker import broker_for
from sluice.cli.output import print_rows
from sluice.exceptions import SluiceError
from sluice.kafka import ensure_topics, records_since
from sluice.records import H_KEY_ID, header
from sluice.settings import Settings
from sluice.shards import access_key_of
from sluice.v1.envelope_pb2 import EnvelopeBatch

GROW_WARNING = """\
note: records are spread by a hash of their key modulo the partition count, so after growing
  * a key's (or shard's) new records may go to another partition than its earlier ones: their
    order across the change is not kept, and its open windows are finished on both partitions
    (ClickHouse merges the partials, so totals stay exact);
  * consumer groups rebalance; workers pick up the new partitions within a session timeout;
  * the table changelog topics of running workers keep their old count: restart the workers
    with a new SLUICE_WORKER_APP_ID or grow their changelog topics the same way."""


def _broker(settings: Settings) -> str:
    broker = broker_for(settings)
    if not broker:
        raise SluiceError("no Kafka broker known", hint="set SLUICE_KAFKA_BOOTSTRAP (or run `sluice dev`)")
    return broker


async def describe(broker: str, topic: str) -> list[list[Any]]:
    """Rows (partition, leader, replicas, end offset) of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        (meta,) = await admin.describe_topics([topic])
        if meta.get("error_code"):
            raise SluiceError(f"topic {topic!r} cannot be described (error code {meta['error_code']})",
                              hint="does it exist? `sluice topics create` makes it")
        parts = sorted(meta["partitions"], key=lambda p: p["partition"])
        ends = await consumer.end_offsets([TopicPartition(topic, p["partition"]) for p in parts])
        return [[p["partition"], p["leader"], len(p["replicas"]), ends[TopicPartition(topic, p["partition"])]]
                for p in parts]
    finally:
        await consumer.stop()
        await admin.close()


async def grow(broker: str, topic: str, partitions: int) -> int:
    """Raise ``topic``'s partition count to ``partitions``; the count before."""
    before = len(await describe(broker, topic))
    if partitions <= before:
        raise SluiceError(f"{topic!r} has {before} partitions already; Kafka cannot shrink a topic")
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        response = await admin.create_partitions({topic: NewPartitions(partitions)})
        errors = [(t, code, msg) for t, code, msg in response.topic_errors if code]
        if errors:
            raise SluiceError(f"growing {topic!r} failed: {errors}")
    except KafkaError as exc:
        raise SluiceError(f"growing {topic!r} failed: {exc!r}") from exc
    finally:
        await admin.close()
    return before


async def key_rates(broker: str, topic: str, window: float) -> dict[str, dict[str, float]]:
    """Per access key over the last ``window`` seconds of ``topic``: records, envelopes and bytes per second."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"records": 0, "envelopes": 0, "bytes": 0, "shards": 0})
    shards: dict[str, set[bytes]] = defaultdict(set)
    try:
        async for records in records_since(consumer, topic, time.time() - window):
            for r in records:
                key = access_key_of(r.key)
                t = totals[key]
                t["records"] += 1
                t["bytes"] += len(r.value or b"")
                shards[key].add(r.key or b"")
                if header(r.headers, H_KEY_ID) is None:  # encrypted batches are not opened
                    t["envelopes"] += len(EnvelopeBatch.FromString(r.value).batch)
    finally:
        await consumer.stop()
    for key, t in totals.items():
        t["shards"] = len(shards[key])
        for field in ("records", "envelopes", "bytes"):
            t[field] /= window
    return dict(totals)


def recommend_shards(envelopes_per_second: float, per_shard: float) -> int:
    """Shards a key needs so that none carries more than ``per_shard`` envelopes/s."""
    return max(1, math.ceil(envelopes_per_second / per_shard))


def run_topics(settings: Settings, args: argparse.Namespace) -> int:
    broker, kafka = _broker(settings), settings.kafka
    topic = args.topic or kafka.raw_topic
    if args.topics_command == "create":
        asyncio.run(ensure_topics(broker, [topic], partitions=args.partitions or kafka.partitions,
                                  replication_factor=kafka.replication_factor))
        args.topics_command = "describe"
    if args.topics_command == "grow":
        before = asyncio.run(grow(broker, topic, args.partitions))
        print(f"{topic}: {before} -> {args.partitions} partitions")
        print(GROW_WARNING)
        return 0
    rows = asyncio.run(describe(broker, topic))
    print_rows(["partition", "leader", "replicas", "end_offset"], rows, args.format)
    return 0


def run_top(settings: Settings, args: argparse.Namespace) -> int:
    rates = asyncio.run(key_rates(_broker(settings), settings.kafka.raw_topic, args.window))
    rows = [
        [key, round(r["envelopes"], 1), round(r["records"], 2), round(r["bytes"]), int(r["shards"]),
         recommend_shards(r["envelopes"], args.per_shard)]
        for key, r in sorted(rates.items(), key=lambda kv: -kv[1]["envelopes"])
    ]
    print_rows(["access_key", "envelopes/s", "records/s", "bytes/s", "shards_seen", "shards_recommended"],
               rows, args.format)
    return 0


def add_top_arguments(top: Any) -> None:
    """Options of ``sluice keys top``."""
    top.add_argument("--window", type=float, default=60.0, help="seconds of traffic to look at (default 60)")
    top.add_argument("--per-shard", type=float, default=20_000.0,
                     help="envelopes/s one shard (partition) should carry at most (default 20000)")
    top.add_argument("--format", choices=["table", "json", "csv"], default="table")


def add_arguments(topics: Any) -> None:
    """The ``topics`` actions."""
    sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    for name, help in (("create", "create the raw topic (if missing) and describe it"),
                       ("describe", "partitions, leaders and end offsets"),
                       ("grow", "add partitions (prints what that changes)")):
        p = sub.add_parser(name, help=help)
        p.add_argument("--topic", help="default: kafka.raw_topic")
        p.add_argument("--format", choices=["table", "json", "csv"], default="table")
        if name != "describe":
            p.add_argument("--partitions", type=int, required=name == "grow")
