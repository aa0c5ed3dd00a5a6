"""Reading from outside the worker: ``sluice query`` on a ClickHouse server directly, or on
the embedded chDB through the worker that owns it (its ``/query`` endpoint), or on chDB itself
when no worker is running; and the worker's ``/status``, to wait until it has caught up.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from sluice.kafka import read_to_end
from sluice.settings import Settings
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.exceptions import QueryError

Result = tuple[list[str], list[list[Any]]]


def worker_url(settings: Settings) -> str:
    host = settings.worker.web_host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{settings.worker.web_port}"


def query_worker(url: str, sql: str, parameters: dict[str, Any] | None = None, *, timeout: float = 30.0) -> Result:
    """Run ``sql`` (with bound ``parameters``) through a worker's ``/query`` endpoint;
    ConnectionError if none answers."""
    body = {"sql": sql} | ({"parameters": parameters} if parameters else {})
    request = urllib.request.Request(
        f"{url}/query", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise QueryError(str(message)) from exc
    except urllib.error.URLError as exc:
        raise ConnectionError(f"no worker answers at {url}: {exc.reason}") from exc
    return body["columns"], body["rows"]


async def _query_direct(settings: Settings, sql: str, parameters: dict[str, Any] | None) -> Result:
    clickhouse = ClickHouse(settings)
    try:
        return await clickhouse.query(sql, parameters)
    finally:
        await clickhouse.stop()


def run_query(settings: Settings, sql: str, parameters: dict[str, Any] | None = None) -> Result:
    """Column names and rows of a read-only query, from wherever the data can be read now: a
    ClickHouse server when one is configured, else the worker that owns chDB, else chDB."""
    if settings.clickhouse.url:
        return asyncio.run(_query_direct(settings, sql, parameters))
    try:
        return query_worker(worker_url(settings), sql, parameters)
    except ConnectionError:
        return asyncio.run(_query_direct(settings, sql, parameters))


def worker_status(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """A worker's ``/status``: partitions, positions, open windows, counters."""
    with urllib.request.urlopen(f"{url}/status", timeout=timeout) as response:
        return dict(json.loads(response.read()))


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of every partition of ``topic``.

    Tansu answers ListOffsets(latest) with the base offset of the last record batch rather than
    the high watermark, so the records from there on are read to find the real end.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        reported = await consumer.end_offsets(tps)
        ends = {tp.partition: off for tp, off in reported.items()}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, reported[tp])
        async for records in read_to_end(consumer, tps):
            last = records[-1]
            ends[last.partition] = max(ends[last.partition], last.offset + 1)
        return ends
    finally:
        await consumer.stop()


async def wait_caught_up(
    settings: Settings, url: str, timeout: float, windows: tuple[str, ...] = ("metrics_1s",)
) -> bool:
    """True once the worker at ``url`` has processed every record now on the raw topic and
    closed every window of the ``windows`` tables; False if it did not within ``timeout``
    seconds or does not answer. (1m windows of current data stay open for a minute; the
    worker emits them when it stops.)"""
    deadline = time.monotonic() + timeout
    ends = await end_offsets(settings.kafka.bootstrap, settings.kafka.raw_topic)
    while time.monotonic() < deadline:
        try:
            status = await asyncio.to_thread(worker_status, url)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        done = {int(p): o for p, o in status["positions"].items()}
        open_windows = status["open_windows"]
        if not any(open_windows.get(t, 0) for t in windows) and all(done.get(p, -1) >= end - 1 for p, end in ends.items()):
            return True
        await asyncio.sleep(0.2)
    return False
