"""``sluice audit``: rebuild, from the raw topic, what each 1-minute window of an access key
should hold, and compare it with what ClickHouse and the files hold.

The raw topic is what the gateway acknowledged (it answers only once Kafka did), so a window
whose counts differ names a loss or a double count, unless the difference is a deliberate,
counted drop (throttling), which the report says how to check. Records are read as the worker
reads them (:func:`sluice.records.decode_record`: encrypted ones with the configured keys); a
record the worker cannot read either is in the dead-letter topic (``sluice dlq list``), not
counted here. A record appended twice (same ``batch-id``: a retried send, or a replay of a dead
letter that now decodes) is expected once, so a worker that stored it twice shows as a double.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from sluice.crypto import Keyring
from sluice.kafka import records_since
from sluice.keys import validate_access_key
from sluice.records import H_BATCH_ID, decode_record, header
from sluice.settings import Settings
from sluice.shards import access_key_of
from sluice.streams.decode import POINT_TIMESTAMP
from sluice.streams.exceptions import DecodeError
from sluice.time_bounds import TimeBounds

NS = 1_000_000_000
MINUTE = 60
# What is counted per window, and where.
MEASURES = ("logs", "events", "points")


@dataclass(frozen=True, slots=True)
class WindowAudit:
    minute: int  # unix seconds of the window start
    expected: dict[str, int]
    clickhouse: dict[str, int]
    files: dict[str, int]

    @property
    def differs(self) -> list[str]:
        """What does not match, e.g. ``['logs in files: 10 expected, 9 found']``."""
        out = []
        for measure in MEASURES:
            want = self.expected.get(measure, 0)
            if self.clickhouse.get(measure, 0) != want:
                out.append(f"{measure} in ClickHouse: {want} expected, {self.clickhouse.get(measure, 0)} found")
            if measure != "points" and self.files.get(measure, 0) != want:
                out.append(f"{measure} in files: {want} expected, {self.files.get(measure, 0)} found")
        return out


async def expected_counts(settings: Settings, access_key: str, start: int) -> dict[int, Counter[str]]:
    """Per window from ``start`` (unix seconds) on, the logs, events and metric points the raw
    topic holds for ``access_key``, in records appended since ``start``."""
    topic = settings.kafka.raw_topic
    keyring = Keyring(settings.encryption)
    bounds = TimeBounds.of(settings).in_worker()  # what the worker drops as out of bounds is not expected
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    seen: set[bytes] = set()  # batch ids
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        async for records in records_since(consumer, topic, start):
            for r in records:
                if access_key_of(r.key) != access_key:
                    continue
                batch_id = header(r.headers, H_BATCH_ID)
                if batch_id is not None:
                    if batch_id in seen:
                        continue
                    seen.add(batch_id)
                try:
                    decoded = decode_record(r, keyring, bounds.around(r.timestamp * 1_000_000))
                except DecodeError:
                    continue  # dead-lettered by the worker: not stored, nor expected
                stamps = [("logs", row[1]) for row in decoded.logs] + [("events", row[1]) for row in decoded.events]
                stamps += [("points", p[POINT_TIMESTAMP]) for p in decoded.points]
                for name, ns in stamps:
                    if ns // NS >= start:
                        counts[ns // NS // MINUTE * MINUTE][name] += 1
    finally:
        await consumer.stop()
    return counts


def stored_counts(query: Callable[[str], tuple[list[str], list[list[Any]]]], database: str,
                  access_key: str, start: int) -> dict[int, Counter[str]]:
    """Per window from ``start`` on, what ClickHouse holds for the key: rows of logs and events,
    points of metrics_1s (the sum of their counts)."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    # access keys are [A-Za-z0-9_-]{3,64} (validated everywhere), so quoting them is safe
    where = f"access_key = '{validate_access_key(access_key)}'"
    for measure, table, column, value in (
        ("logs", "logs FINAL", "timestamp", "count()"),
        ("events", "events FINAL", "timestamp", "count()"),
        ("points", "metrics_1s", "window_start", "sum(count)"),
    ):
        sql = (f"SELECT toUnixTimestamp(toStartOfMinute({column})) AS m, {value} AS c "
               f"FROM {database}.{table} WHERE {where} AND {column} >= toDateTime({start}) GROUP BY m")
        for minute, n in query(sql)[1]:
            counts[int(minute)][measure] += int(n)
    return counts


def file_counts(settings: Settings, access_key: str, start: int) -> dict[int, Counter[str]]:
    """Per window, the lines of the key's files (rotated ones included)."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    folder = settings.files_dir / access_key
    for stream in ("logs", "events"):
        for path in sorted(folder.glob(f"{stream}*.jsonl*")) if folder.exists() else []:
            for line in path.read_text(errors="replace").splitlines():
                ts = json.loads(line)["timestamp"] // NS
                if ts >= start:
                    counts[ts // MINUTE * MINUTE][stream] += 1
    return counts


def audit(settings: Settings, access_key: str, since_seconds: float,
          query: Callable[[str], tuple[list[str], list[list[Any]]]]) -> list[WindowAudit]:
    """Every window since ``since_seconds`` ago that the topic, ClickHouse or the files know of."""
    start = int(time.time() - since_seconds) // MINUTE * MINUTE
    expected = asyncio.run(expected_counts(settings, access_key, start))
    stored = stored_counts(query, settings.clickhouse.database, access_key, start)
    files = file_counts(settings, access_key, start)
    minutes = sorted(set(expected) | set(stored) | set(files))
    return [WindowAudit(m, dict(expected.get(m, {})), dict(stored.get(m, {})), dict(files.get(m, {})))
            for m in minutes]
