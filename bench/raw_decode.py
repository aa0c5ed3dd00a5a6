"""Reference (the worker's ceiling): a raw aiokafka ``getmany`` loop that only decodes.

Reads the raw topic from the start with the worker's own decoder (``--decoder sluice``, which
decodes the wire bytes in C) or with protobuf's (``--decoder protobuf``: parse the batch, read
each envelope's fields, as any Python consumer would), nothing else; prints
``{"first": t, "done": t, "envelopes": n}`` (wall-clock seconds) once ``--expect`` envelopes
are decoded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from sluice.runtime import WORKER_GC_MIDDLE, tune_process
from sluice.settings import load_settings
from sluice.streams.decode import decode_batch, decode_with_protobuf

DECODERS = {"sluice": decode_batch, "protobuf": decode_with_protobuf}


async def run(bootstrap: str, topic: str, expect: int, decoder: str) -> None:
    decode = DECODERS[decoder]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
                                fetch_max_bytes=32 << 20)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        while not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        print(json.dumps({"ready": True}), flush=True)
        n, first = 0, 0.0
        while n < expect:
            got = await consumer.getmany(timeout_ms=200, max_records=500)
            for tp, messages in got.items():
                if not first:
                    first = time.time()
                for m in messages:
                    d = decode(m.value, "ak", tp.partition, m.offset)
                    n += len(d.logs) + len(d.events) + len(d.points)
        print(json.dumps({"first": first, "done": time.time(), "envelopes": n}), flush=True)
    finally:
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--decoder", choices=sorted(DECODERS), default="sluice")
    a = p.parse_args()
    tune_process(load_settings(), middle=WORKER_GC_MIDDLE)  # the collector and heap tuning the Sluice worker runs with
    asyncio.run(run(a.bootstrap, a.topic, a.expect, a.decoder))


if __name__ == "__main__":
    main()
