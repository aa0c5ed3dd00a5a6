"""Reference: a Quix Streams application doing the same tumbling 1 s window aggregation.

Each record is decoded (protobuf) and expanded to one row per envelope; rows are re-keyed by
series with ``group_by`` (Quix's way to aggregate per series: a repartition topic), stamped
with the envelope's time, and reduced in 1 s tumbling windows (count, sum, min, max, last).
Logs are counted, not windowed. Topics Quix creates get explicit configs, since Tansu does not
report the ones Quix reads back. Prints ``{"first": t, "done": t, "envelopes": n}`` once
``--expect`` envelopes are through.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import timedelta
from typing import Any

from quixstreams import Application
from quixstreams.models.topics import TopicConfig

from sluice.runtime import WORKER_GC_MIDDLE, tune_process
from sluice.settings import load_settings
from sluice.v1.envelope_pb2 import EnvelopeBatch

_EXPLICIT = {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete"}


def points(value: bytes) -> list[dict[str, Any]]:
    batch = EnvelopeBatch()
    batch.ParseFromString(value)
    out = []
    for env in batch.batch:
        kind = env.WhichOneof("message")
        if kind == "counter":
            name, v = env.counter.name, float(env.counter.delta)
        elif kind == "gauge":
            name, v = "latency", env.gauge.metrics["latency"].value
        else:
            name, v = "", 0.0
        tags = ",".join(f"{k}={env.tags[k]}" for k in sorted(env.tags))
        out.append({"series": f"{name}|{tags}" if name else "", "v": v, "ts": env.timestamp // 1_000_000})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--state-dir", required=True)
    a = p.parse_args()
    tune_process(load_settings(), middle=WORKER_GC_MIDDLE)  # the collector and heap tuning the Sluice worker runs with
    app = Application(
        broker_address=a.bootstrap, consumer_group=f"bench-quix-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", state_dir=a.state_dir, loglevel="WARNING",
        # the Sluice worker's group timeouts
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    config = TopicConfig(num_partitions=2, replication_factor=1, extra_config=_EXPLICIT)
    source = app.topic(a.topic, value_deserializer="bytes", key_deserializer="bytes", config=config)
    # Tansu's DescribeConfigs answer lacks retention.ms, which group_by needs to derive the
    # repartition topic's config: give it the values the topic was created with.
    for k, v in _EXPLICIT.items():
        source.broker_config.extra_config.setdefault(k, v)
    state: dict[str, float] = {"n": 0, "first": 0.0}

    def seen(k: int) -> None:
        if not state["first"]:
            state["first"] = time.time()
        state["n"] += k
        if state["n"] >= a.expect:
            print(json.dumps({"first": state["first"], "done": time.time(), "envelopes": int(state["n"])}), flush=True)
            state["n"] = -(1 << 62)

    def count_logs(row: dict[str, Any]) -> bool:
        if row["series"]:
            return True
        seen(1)
        return False

    def reduce(agg: list[float], row: dict[str, Any]) -> list[float]:
        v = row["v"]
        return [agg[0] + 1, agg[1] + v, min(agg[2], v), max(agg[3], v), v]

    sdf = app.dataframe(source)
    sdf = sdf.apply(points, expand=True).filter(count_logs)
    sdf = sdf.group_by(lambda row: row["series"], name="series")
    sdf = sdf.set_timestamp(lambda value, key, ts, headers: value["ts"])
    sdf = sdf.update(lambda row: seen(1))
    sdf = sdf.tumbling_window(timedelta(seconds=1)).reduce(reduce, lambda row: [1, row["v"], row["v"], row["v"], row["v"]]).final()
    app.run()


if __name__ == "__main__":
    main()
