"""Reference: the naive Faust agent — one table update per event.

Same topic, same records: each record is parsed and every envelope adds to a Table entry of its
series and 1 s window (count and sum), one ``table[key] = ...`` per envelope. Prints
``{"first": t, "done": t, "envelopes": n}`` once ``--expect`` envelopes are applied and the
table's changelog messages for them are acknowledged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import faust

from sluice.runtime import WORKER_GC_MIDDLE, tune_process
from sluice.settings import load_settings
from sluice.v1.envelope_pb2 import EnvelopeBatch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--web-port", type=int, required=True)
    p.add_argument("--datadir", required=True)
    a = p.parse_args()
    tune_process(load_settings(), middle=WORKER_GC_MIDDLE)  # the collector and heap tuning the Sluice worker runs with
    app = faust.App(a.app_id, broker=f"kafka://{a.bootstrap}", store="memory://", autodiscover=False,
                    datadir=a.datadir, web_port=a.web_port, web_host="127.0.0.1",
                    consumer_auto_offset_reset="earliest", topic_replication_factor=1,
                    table_standby_replicas=0, producer_acks=-1,
                    # the Sluice worker's settings: Tansu holds a join for the rebalance timeout
                    broker_session_timeout=6.0, broker_heartbeat_interval=1.0, broker_rebalance_timeout=10.0)
    topic = app.topic(a.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    table = app.Table("naive-windows", default=lambda: [0, 0.0], partitions=2)
    state: dict[str, Any] = {"n": 0, "first": 0.0}

    @app.agent(topic)
    async def per_event(stream: Any) -> None:
        async for value in stream:
            if not state["first"]:
                state["first"] = time.time()
            batch = EnvelopeBatch()
            batch.ParseFromString(value)
            for env in batch.batch:
                kind = env.WhichOneof("message")
                if kind == "counter":
                    name, v = env.counter.name, float(env.counter.delta)
                elif kind == "gauge":
                    name, v = "latency", env.gauge.metrics["latency"].value
                else:
                    name, v = "logs", 1.0
                key = f"{name}|{sorted(env.tags.items())}|{env.timestamp // 1_000_000_000}"
                agg = table[key]
                table[key] = [agg[0] + 1, agg[1] + v]
                state["n"] += 1
            if state["n"] >= a.expect:
                # Done when the table's changelog holds every update, as the Sluice worker is timed
                # to its state being durable: sent to Kafka and acknowledged.
                await app.producer.flush()
                # Faust sends print() to its log: write to the real standard output.
                line = json.dumps({"first": state["first"], "done": time.time(), "envelopes": state["n"]})
                os.write(1, (line + "\n").encode())
                state["n"] = -(1 << 62)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
