"""The ClickHouse sink's column-oriented inserts into real chDB: every table's types (Map, Tuple,
DateTime64, Enum, LowCardinality) come back exactly as the rows held them, and as a
row-oriented insert of the same rows stores them; a block added again with its token is kept once."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest_asyncio

from sluice.client import event_envelope, log_envelope
from sluice.settings import Settings
from sluice.streams.clickhouse import ClickHouse, migrate
from sluice.streams.decode import EVENT_COLUMNS, LOG_COLUMNS, SPAN_COLUMNS, decode_batch
from sluice.streams.sinks.clickhouse import ClickHouseSink
from sluice.streams.windows import METRIC_COLUMNS
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch, Log, Span

NS = 1_000_000_000
T = 1_700_000_000 * NS + 123_456_789


@pytest_asyncio.fixture
async def clickhouse(tmp_path: Path) -> AsyncIterator[ClickHouse]:
    no_ttl = {"ttl_days_raw": 0, "ttl_days_1s": 0, "ttl_days_1m": 0}  # the rows are from 2023
    ch = ClickHouse(Settings(data_dir=tmp_path, clickhouse=no_ttl))
    await ch.start()
    try:
        yield ch
    finally:
        await ch.stop()  # chDB opens one directory per process: the next test opens its own


def decoded() -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    span = Envelope(timestamp=T, source_id="api", instance_id="2", span=Span(
        trace_id=bytes(range(16)), span_id=b"\x01" * 8, name="GET /", kind=Span.SERVER,
        start=T, end=T + 1_500, status=Span.ERROR, status_message="boom",
    ))
    span.tags["http.route"] = "/"
    batch = EnvelopeBatch(batch=[
        log_envelope("héllo", timestamp=T, source_id="api", instance_id="1", tags={"host": "h1", "": "empty key"}),
        log_envelope(b"\xff not utf-8", error=True, timestamp=0, source_id="", instance_id=""),
        event_envelope("deployed", "v2", timestamp=T + 1, source_id="ci", tags={}),
        span,
    ])
    d = decode_batch(batch.SerializeToString(), "ak_test", 3, 41)
    return d.logs, d.events, d.spans


def metric_rows() -> list[list[Any]]:
    # As TumblingWindows.close emits them: window start in unix seconds, last as (ns, value).
    return [
        ["ak_test", "requests", 2**64 - 1, 1_700_000_000, "counter", "", {"host": "h1"}, 3, 6.0, 1.0, 3.0,
         (T, 42.0), {}],
        ["ak_test", "latency", 7, 1_700_000_001, "timer", "ms", {}, 2, 0.5, -0.25, 0.75, (T + 1, 0.75),
         {-12: 1, 3: 1}],
    ]


async def stored(ch: ClickHouse, database: str, table: str, columns: Sequence[str]) -> list[list[Any]]:
    return (await ch.query(f"SELECT {', '.join(columns)} FROM {database}.{table} ORDER BY tuple(*)"))[1]


async def test_every_table_stores_what_its_rows_hold(clickhouse: ClickHouse) -> None:
    logs, events, spans = decoded()
    tables = [("logs", LOG_COLUMNS, logs), ("events", EVENT_COLUMNS, events), ("spans", SPAN_COLUMNS, spans),
              ("metrics_1s", METRIC_COLUMNS, metric_rows()), ("metrics_1m", METRIC_COLUMNS, metric_rows())]
    sink = ClickHouseSink(clickhouse)
    for table, columns, rows in tables:
        sink.add(table, columns, rows, f"token-{table}")
    assert await sink.flush() == 2 + 1 + 1 + 2 + 2

    ts = datetime(2023, 11, 14, 22, 13, 20, 123456)  # read back naive (UTC), to the µs
    assert await stored(clickhouse, "sluice", "logs", LOG_COLUMNS) == [
        ["ak_test", datetime(1970, 1, 1), "", "", "ERR", "\ufffd not utf-8", {}, 3, 41, 1],
        ["ak_test", ts, "api", "1", "OUT", "héllo", {"": "empty key", "host": "h1"}, 3, 41, 0],
    ]
    assert await stored(clickhouse, "sluice", "events", EVENT_COLUMNS) == [
        ["ak_test", ts, "ci", "", "deployed", "v2", {}, 3, 41, 2],
    ]
    assert await stored(clickhouse, "sluice", "spans", SPAN_COLUMNS) == [[
        "ak_test", ts, "api", "2", bytes(range(16)).hex(), "01" * 8, "", "GET /", "SERVER",
        datetime(2023, 11, 14, 22, 13, 20, 123458), 1_500, "ERROR", "boom", {"http.route": "/"}, 3, 41, 3,
    ]]
    nanos = "SELECT toUnixTimestamp64Nano(timestamp), toUnixTimestamp64Nano(end_time) FROM sluice.spans"
    assert (await clickhouse.query(nanos))[1] == [[T, T + 1_500]]
    for table in ("metrics_1s", "metrics_1m"):
        assert await stored(clickhouse, "sluice", table, METRIC_COLUMNS) == [
            ["ak_test", "latency", 7, datetime(2023, 11, 14, 22, 13, 21), "timer", "ms", {}, 2, 0.5,
             -0.25, 0.75, (T + 1, 0.75), {-12: 1, 3: 1}],
            ["ak_test", "requests", 2**64 - 1, datetime(2023, 11, 14, 22, 13, 20), "counter", "",
             {"host": "h1"}, 3, 6.0, 1.0, 3.0, (T, 42.0), {}],
        ]

    # The same rows inserted row-oriented by clickhouse-connect itself are stored the same way.
    client = await clickhouse._run(clickhouse._connected)
    await clickhouse._run(migrate, client, "by_rows")
    for table, columns, rows in tables:
        await clickhouse._run(client.insert, f"by_rows.{table}", rows, column_names=list(columns))
        assert await stored(clickhouse, "by_rows", table, columns) == await stored(clickhouse, "sluice", table, columns)


async def test_a_block_added_again_with_its_token_is_stored_once(clickhouse: ClickHouse) -> None:
    logs, _, _ = decoded()
    sink = ClickHouseSink(clickhouse)
    for token in ("replayed", "replayed", "other"):
        sink.add("logs", LOG_COLUMNS, logs, token)
        await sink.flush()
    assert (await clickhouse.query("SELECT count() FROM sluice.logs"))[1] == [[4]]
    assert sink.rows_written == {"logs": 6}


class _Column(list[Any]):
    """A column list that a weak reference can follow."""


async def test_an_inserted_block_is_freed_when_its_insert_returns(clickhouse: ClickHouse) -> None:
    columns = [_Column(c) for c in zip(*metric_rows())]
    freed = [weakref.ref(c) for c in columns]
    gc.disable()  # only reference counting may free it
    try:
        await clickhouse.insert_columns("metrics_1s", columns, METRIC_COLUMNS, "freed")
        del columns
        # The executor's thread lets go of a finished call only after its result is handed
        # over, but always before it takes the next one.
        await clickhouse.query("SELECT 1")
        assert [r() for r in freed] == [None] * len(METRIC_COLUMNS)
    finally:
        gc.enable()
    assert len(await stored(clickhouse, clickhouse.database, "metrics_1s", METRIC_COLUMNS)) == len(metric_rows())


_WITHOUT_PANDAS = """
import asyncio, sys
from pathlib import Path
from sluice.settings import Settings
from sluice.streams.app import Worker  # everything the worker imports
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.decode import LOG_COLUMNS, decode_batch
from sluice.client import log_envelope
from sluice.v1.envelope_pb2 import EnvelopeBatch

async def main() -> None:
    no_ttl = {"ttl_days_raw": 0, "ttl_days_1s": 0, "ttl_days_1m": 0}
    ch = ClickHouse(Settings(data_dir=Path(sys.argv[1]), clickhouse=no_ttl))
    await ch.start()
    rows = decode_batch(EnvelopeBatch(batch=[log_envelope(b"x", source_id="a", timestamp=1)]).SerializeToString(),
                        "ak", 0, 0).logs
    await ch.insert_columns("logs", [list(c) for c in zip(*rows)], LOG_COLUMNS, "t")
    _, result = await ch.query("SELECT count() FROM sluice.logs", {})
    await ch.stop()
    print(result[0][0], "pandas" in sys.modules)

asyncio.run(main())
"""


def test_inserts_and_queries_leave_pandas_unimported(tmp_path: Path) -> None:
    # clickhouse-connect would import it (42 MiB) to check each insert for a DataFrame.
    out = subprocess.run([sys.executable, "-c", _WITHOUT_PANDAS, str(tmp_path)], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["1", "False"]
