"""Every query of the Grafana dashboard (deploy/grafana/dashboards/sluice.json) works against what
Sluice really writes and exports: its SQL, with Grafana's macros and variables substituted as
the ClickHouse plugin does, runs on chDB after the worker's migrations and returns the expected
columns and values; every metric its PromQL names is one a real gateway or worker serves, with
the labels it groups by."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from sluice.client import SluiceClient, counter_envelope, log_envelope, timer_envelope
from sluice.ingress import Gateway, issue_token
from sluice.ingress.metrics import GatewayMetrics
from sluice.settings import Settings
from sluice.streams import sketch
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.decode import LOG_COLUMNS, decode_batch
from sluice.streams.reader import Reader
from sluice.streams.windows import METRIC_COLUMNS
from sluice.v1.envelope_pb2 import EnvelopeBatch
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "sluice.json"
CLICKHOUSE, PROMETHEUS = "grafana-clickhouse-datasource", "prometheus"
NS = 1_000_000_000
NOW = int(time.time()) // 60 * 60
FROM, TO = NOW - 3600, NOW  # the dashboard's default range, now-1h to now
KEY = "tenant 'a' \\ %27"  # a key no pasted value would survive
OTHER = "tenant-b"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def targets(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of the datasource type ``kind``."""
    for panel in dashboard()["panels"]:
        if panel.get("datasource", {}).get("type") == kind:
            for target in panel["targets"]:
                yield panel["title"], target


def grafana_sql(sql: str, variables: dict[str, str]) -> str:
    """``sql`` as the ClickHouse plugin sends it: ``${name:percentencode}`` (Grafana's strict
    encodeURIComponent) and ``$__timeFilter(column)`` over [FROM, TO]; a macro or variable left
    over (one the dashboard took up since) fails the test."""
    for name, value in variables.items():
        sql = sql.replace(f"${{{name}:percentencode}}", urllib.parse.quote(value, safe=""))
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({FROM}) AND \1 <= toDateTime({TO})", sql)
    assert "$" not in sql and "[[" not in sql, f"a macro or variable the test does not know: {sql}"
    return sql


def sketch_of(values: list[float]) -> sketch.Sketch:
    sk: sketch.Sketch = {}
    for v in values:
        sketch.add(sk, v)
    return sk


def quantiles(values: list[float]) -> list[float | None]:
    """p50, p90, p99 of ``values`` as ``sluice query metrics`` shows them (scoped.present)."""
    return sketch.quantiles(cast(Mapping[int | str, int], sketch_of(values)), (0.5, 0.9, 0.99))


def metric_row(key: str, name: str, kind: str, window_start: int, values: list[float]) -> list[Any]:
    """A window's row as the worker writes it (METRIC_COLUMNS), timers with their sketch."""
    sk = sketch_of(values) if kind == "timer" else {}
    return [key, name, hash((key, name)) & 0xFFFF, window_start, kind, "ms" if kind == "timer" else "",
            {}, len(values), sum(values), min(values), max(values), (window_start * NS, values[-1]), sk]


def columns_of(rows: list[list[Any]]) -> list[list[Any]]:
    return [list(c) for c in zip(*rows)]


def log_columns(key: str, *lines: tuple[int, str]) -> list[list[Any]]:
    """Log rows (LOG_COLUMNS) as the worker decodes them: (unix seconds, payload) each."""
    batch = EnvelopeBatch(batch=[log_envelope(p, source_id="web", timestamp=t * NS) for t, p in lines])
    return columns_of(decode_batch(batch.SerializeToString(), key, 0, 0).logs)


async def test_every_dashboard_sql_query_runs_on_chdb_with_the_expected_result(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    writer, reader = ClickHouse(settings), Reader(settings)  # the reader is read-only, as Grafana's user
    await writer.start()  # the worker's migrations
    try:
        w1, w2 = NOW - 600, NOW - 540
        timers_1 = [1.0, 2.0, 3.0, 4.0, 100.0]
        timers_2 = [0.0, 50.0]
        rows = [
            metric_row(KEY, "db.query", "timer", w1, timers_1[:3]),
            metric_row(KEY, "db.query", "timer", w1, timers_1[3:]),  # a second partial of the window
            metric_row(KEY, "db.query", "timer", w2, timers_2),
            metric_row(KEY, "requests", "counter", w1, [5.0, 7.0]),
            metric_row(KEY, "cpu", "gauge", w1, [0.25, 0.75]),
            metric_row(OTHER, "db.query", "timer", w1, [9999.0]),
            metric_row(KEY, "db.query", "timer", FROM - 600, [7777.0]),  # before the range
        ]
        for table in ("metrics_1s", "metrics_1m"):
            await writer.insert_columns(table, columns_of(rows), METRIC_COLUMNS, f"{table}-rows")
        await writer.insert_columns(
            "logs", log_columns(KEY, (w1, "first"), (w2, "second"), (FROM - 60, "before the range")),
            LOG_COLUMNS, "logs-key",
        )
        await writer.insert_columns("logs", log_columns(OTHER, (w1, "another key's")), LOG_COLUMNS, "logs-other")
        variables = {"access_key": KEY, "timer": "db.query"}

        answers: dict[str, tuple[list[str], list[list[Any]]]] = {}
        for title, target in targets(CLICKHOUSE):
            answers[title] = await reader.query(grafana_sql(target["rawSql"], variables))
        for variable in dashboard()["templating"]["list"]:
            answers[variable["name"]] = await reader.query(grafana_sql(variable["query"], variables))

        q1, q2 = (quantiles(v) for v in (timers_1, timers_2))
        assert q1[0] == pytest.approx(3.0, rel=0.01) and q1[2] == pytest.approx(4.0, rel=0.01) and q2[0] == 0.0
        percentiles = (["time", "p50", "p90", "p99"], [[w1, *q1], [w2, *q2]])
        expected: dict[str, tuple[list[str], list[list[Any]]]] = {
            "access_key": (["access_key"], sorted([[KEY], [OTHER]])),
            "timer": (["name"], [["db.query"]]),
            "Counters per minute": (["time", "name", "value"], [[w1, "requests", 12.0]]),
            "Gauges (1s, average)": (["time", "name", "value"], [[w1, "cpu", 0.5]]),
            "Logs": (["timestamp", "type", "source_id", "payload"],
                     [[w2, "OUT", "web", "second"], [w1, "OUT", "web", "first"]]),  # newest first, one key
            "Timer $timer: p50/p90/p99 (1 min)": percentiles,
            "Timer $timer: p50/p90/p99 (1 s)": percentiles,
        }
        assert set(answers) == set(expected)
        for title, (columns, values) in expected.items():
            got_columns, got_rows = answers[title]
            assert got_columns == columns, title
            got = [[_plain(v) for v in row] for row in got_rows]
            if title == "access_key":
                got = sorted(got)
            assert got == [[pytest.approx(v, rel=1e-9) if isinstance(v, float) else v for v in row]
                           for row in values], title
    finally:
        await reader.stop()
        await writer.stop()


def _plain(value: Any) -> Any:
    """A datetime as unix seconds (the time columns), else the value."""
    return int(value.timestamp()) if hasattr(value, "timestamp") else value


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(settings) as gw:
        yield gw


def client_for(gateway: Gateway, key: str) -> SluiceClient:
    return SluiceClient(gateway.address, key, issue_token(gateway.settings.auth, key, 60))


PROMQL_NAME = re.compile(r"\bsluice_\w+")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def exported(text: str) -> dict[str, set[str]]:
    """Every sample name a /metrics page can carry, with the labels seen on its samples."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:  # a family's samples, whether or not any is there yet
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def gateway_labels() -> dict[str, set[str]]:
    """The labels each gateway metric is declared with, samples or not ("le" for buckets)."""
    labels: dict[str, set[str]] = {}
    for metric in vars(GatewayMetrics(key_labels=True)).values():
        names = getattr(metric, "_labelnames", None)
        name = getattr(metric, "_name", None)
        if names is not None and name is not None:
            for suffix in ("", "_total", "_bucket", "_sum", "_count"):
                labels[name + suffix] = set(names) | ({"le"} if suffix == "_bucket" else set())
    return labels


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_every_dashboard_promql_metric_is_exported_with_its_labels(
    gateway: Gateway, worker_process: WorkerProcess, unique: str
) -> None:
    # with a log rate, so that the worker's throttle families carry the key
    key = await add_key(gateway.keys, f"ak_{unique}", limits={"events_per_second": 1000})
    worker_process.start()
    t0 = (time.time_ns() // NS - 120) * NS
    async with client_for(gateway, key) as client:
        assert await client.send([
            log_envelope("one line", timestamp=t0 + 1),
            counter_envelope("requests", 1, total=1, timestamp=t0 + 2),
            timer_envelope("db.query", t0, t0 + 10_000_000, timestamp=t0 + 3),
        ]) == 3
    await worker_process.caught_up()

    assert gateway.metrics_port is not None
    names = exported(scrape(f"http://127.0.0.1:{gateway.metrics_port}"))
    worker_names = exported(scrape(worker_process.url))
    assert not set(names) & set(worker_names)
    names |= worker_names
    declared = gateway_labels()

    expressions = [(title, t["expr"]) for title, t in targets(PROMETHEUS)]
    assert len(expressions) >= 30
    unchecked: set[tuple[str, str]] = set()
    for title, expr in expressions:
        used = PROMQL_NAME.findall(expr)
        assert used, f"{title}: {expr} names no Sluice metric"
        unknown = [n for n in used if n not in names]
        assert unknown == [], f"{title}: {expr} names metrics nobody exports: {unknown}"
        for group in GROUPING.findall(expr):
            for label in (g.strip() for g in group.split(",")):
                for name in used:
                    known = names[name] | declared.get(name, set())
                    if label in known:
                        continue
                    assert not names[name] and name not in declared, f"{title}: {name} has no label {label}"
                    unchecked.add((name, label))
    # Worker families with per-key samples only once a point came late: not checked here.
    assert unchecked == {("sluice_worker_late_points_total", "access_key")}


async def test_an_hour_of_timer_percentiles_per_second_fits_in_128_mib(tmp_path: Path) -> None:
    """The 1 s percentile panel over its default hour: 10 series of one timer, a window each
    second of 200 values in as many buckets, every point equal to the sketch's own quantiles,
    within 128 MiB of query memory (it needs 40-48 MiB; looking each bucket up in the merged map
    took over 1 GiB)."""
    settings = Settings(data_dir=tmp_path, query={"max_memory_bytes": 128 << 20})
    writer, reader = ClickHouse(settings), Reader(settings)
    await writer.start()
    try:
        values = {t: [1.03 ** ((t + i) % 600) for i in range(200)] for t in range(FROM, TO)}
        rows = [metric_row(KEY, "db.query", "timer", t, v[s::10]) for t, v in values.items() for s in range(10)]
        assert len(rows) == 36_000
        await writer.insert_columns("metrics_1s", columns_of(rows), METRIC_COLUMNS, "hour")
        (sql,) = [t["rawSql"] for title, t in targets(CLICKHOUSE) if title == "Timer $timer: p50/p90/p99 (1 s)"]
        columns, points = await reader.query(grafana_sql(sql, {"access_key": KEY, "timer": "db.query"}))
        assert columns == ["time", "p50", "p90", "p99"] and len(points) == 3600
        for time_, *got in points[::599]:
            assert got == [pytest.approx(w, rel=1e-9) for w in quantiles(values[_plain(time_)])]
    finally:
        await reader.stop()
        await writer.stop()
