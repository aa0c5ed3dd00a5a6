"""The pipeline with a fake ClickHouse: routing, tokens, dead letters, retries, ordering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluice.client import counter_envelope, log_envelope, timer_envelope
from sluice.keys import AccessKeyConfig
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.exceptions import ClickHouseUnavailable
from sluice.streams.pipeline import Pipeline, Record, steps
from sluice.streams.positions import Positions
from sluice.streams.sinks.clickhouse import ClickHouseSink
from sluice.streams.sinks.files import FileSink
from sluice.streams.windows import TumblingWindows, series_id
from sluice.time_bounds import TimeBounds
from sluice.v1.envelope_pb2 import EnvelopeBatch
from tests.unit.streams.test_windows import DictState

NS = 1_000_000_000
T = 1_700_000_000 * NS
CT = [("content-type", b"application/x-sluice-batch+proto")]


class FakeClickHouse:
    def __init__(self, failures: int = 0) -> None:
        self.inserts: list[tuple[str, list[list[Any]], str]] = []
        self.failures = failures

    async def insert_columns(self, table: str, data: Sequence[Sequence[Any]], columns: Sequence[str], token: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ClickHouseUnavailable("ClickHouse is down")
        assert len(data) == len(columns) and len({len(c) for c in data}) == 1, "not one list per column"
        self.inserts.append((table, [list(r) for r in zip(*data)], token))  # kept as rows


def record(offset: int, *envelopes: Any, key: bytes = b"k", partition: int = 0) -> Record:
    return Record("raw", partition, offset, key, EnvelopeBatch(batch=envelopes).SerializeToString(), CT)


def make(tmp_path: Path, fake: FakeClickHouse, **kwargs: Any) -> tuple[Pipeline, list[tuple[Record, str]]]:
    dead: list[tuple[Record, str]] = []

    async def dead_letter(r: Record, reason: str) -> None:
        dead.append((r, reason))

    sink = ClickHouseSink(fake, backoff=0.001, max_backoff=0.002)  # type: ignore[arg-type]
    windows = {
        "metrics_1s": TumblingWindows(DictState(), size=1, lateness=0, idle_close=0),
        "metrics_1m": TumblingWindows(DictState(), size=60, lateness=0, idle_close=0),
    }
    return Pipeline(windows, FileSink(tmp_path), sink, dead_letter=dead_letter, **kwargs), dead


async def test_a_batch_is_routed_tokened_and_committed(tmp_path: Path) -> None:
    fake = FakeClickHouse()
    pipeline, dead = make(tmp_path, fake)
    await pipeline.handle(
        [
            record(3, log_envelope("hi", timestamp=T, source_id="s"), counter_envelope("c", 2, timestamp=T)),
            record(4, counter_envelope("c", 3, timestamp=T + 1)),
            Record("raw", 0, 5, b"k", b"\x00garbage", CT),
        ],
        [0],
    )
    assert [(t, len(rows)) for t, rows, _ in fake.inserts] == [("logs", 1), ("metrics_1s", 1), ("metrics_1m", 1)]
    assert fake.inserts[1][1][0][7:9] == [2, 5.0]
    assert fake.inserts[2][1][0][3] == T // NS // 60 * 60
    assert [(r.offset, reason.split(":")[0]) for r, reason in dead] == [(5, "not an EnvelopeBatch")]
    assert [json.loads(x)["payload"] for x in (tmp_path / "k" / "logs.jsonl").read_text().splitlines()] == ["hi"]
    assert pipeline.counters.as_dict() == {
        "records": 3, "steps": 1, "envelopes": 3, "logs": 1, "events": 0, "spans": 0, "points": 2, "replayed_records_skipped": 0,
        "dead_letters": 1, "throttled": 0, "late": 0, "out_of_bounds": 0, "windows_closed": 2, "metric_rows": 2,
    }
    assert pipeline.positions.as_dict() == {0: 5}
    assert pipeline.open_windows([0]) == {"metrics_1s": 0, "metrics_1m": 0}


async def test_the_same_records_replayed_give_the_same_tokens(tmp_path: Path) -> None:
    batch = [record(1, log_envelope("a", timestamp=T)), record(2, log_envelope("b", timestamp=T))]
    first, second = FakeClickHouse(), FakeClickHouse()
    await make(tmp_path / "1", first)[0].handle(batch, [0])
    await make(tmp_path / "2", second)[0].handle(batch, [0])
    assert first.inserts == second.inserts
    other = FakeClickHouse()
    await make(tmp_path / "3", other)[0].handle(batch[:1], [0])
    assert other.inserts[0][2] != first.inserts[0][2]


async def test_routes_choose_the_sinks(tmp_path: Path) -> None:
    fake = FakeClickHouse()
    config = AccessKeyConfig(access_key="key", routes={"logs": ["clickhouse"], "metrics_1s": [], "metrics_1m": ["clickhouse"]})
    pipeline, _ = make(tmp_path, fake, routes=lambda key: config if key == "key" else None)
    envelopes = (log_envelope("x", timestamp=T), counter_envelope("c", 1, timestamp=T))
    await pipeline.handle([record(0, *envelopes, key=b"key"), record(1, *envelopes, key=b"other")], [0])
    assert [(t, sorted(r[0] for r in rows)) for t, rows, _ in fake.inserts] == [
        ("logs", ["key", "other"]), ("metrics_1s", ["other"]), ("metrics_1m", ["key", "other"])
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


async def test_clickhouse_down_is_retried_in_order_without_loss(tmp_path: Path) -> None:
    fake = FakeClickHouse(failures=3)
    pipeline, _ = make(tmp_path, fake)
    await pipeline.handle([record(0, log_envelope("x", timestamp=T), counter_envelope("c", 1, timestamp=T))], [0])
    assert [t for t, _, _ in fake.inserts] == ["logs", "metrics_1s", "metrics_1m"]
    assert pipeline.clickhouse.retries == 3
    assert pipeline.clickhouse.pending_rows == 0


async def test_a_cancelled_caller_does_not_stop_its_job(tmp_path: Path) -> None:
    fake = FakeClickHouse(failures=5)
    pipeline, _ = make(tmp_path, fake)
    caller = asyncio.ensure_future(pipeline.handle([record(0, log_envelope("x", timestamp=T))], [0]))
    await asyncio.sleep(0)
    caller.cancel()
    await pipeline.drain()
    assert [t for t, _, _ in fake.inserts] == ["logs"]


def test_positions_find_records_that_skip_ahead() -> None:
    state = DictState()
    positions = Positions(state)
    positions.advance(0, 9)
    assert state.data == {"0": [9]} and Positions(state).get(0) == 9
    batch = [record(10), record(5, partition=1), record(11), record(13), record(14), record(7, partition=1)]
    kept, gaps, durable = positions.split(batch, lambda p: {1: 4}[p])
    assert [(r.partition, r.offset) for r in kept] == [(0, 10), (0, 11)]
    assert (gaps, durable) == ({0: 12, 1: 4}, 0)
    # Records read again at or below the position are durable: dropped, and no gap.
    assert positions.split([record(3), record(9), record(10), record(10)], lambda p: 0) == ([record(10)], {}, 3)


async def test_points_later_than_max_lateness_are_dropped_and_counted_per_key(tmp_path: Path) -> None:
    fake = FakeClickHouse()
    pipeline, _ = make(tmp_path, fake, max_lateness=60)
    taken_at = T + 3600 * NS  # the gateway took the record an hour after the oldest point
    late = Record("raw", 0, 1, b"k", EnvelopeBatch(batch=[
        counter_envelope("c", 1, timestamp=T),  # an hour late: dropped
        counter_envelope("c", 2, timestamp=taken_at - 30 * NS),  # 30 s late: kept, a correction at worst
        log_envelope("logs are never late", timestamp=T),
    ]).SerializeToString(), CT, timestamp_ns=taken_at)
    await pipeline.handle([late], [0])
    assert (pipeline.counters.late, pipeline.late, pipeline.counters.points) == (1, {"k": 1}, 1)
    assert [(t, [r[8] for r in rows]) for t, rows, _ in fake.inserts if t.startswith("metrics")] == [
        ("metrics_1s", [2.0]), ("metrics_1m", [2.0])
    ]
    assert [t for t, _, _ in fake.inserts] == ["logs", "metrics_1s", "metrics_1m"]


async def test_metric_windows_go_to_files_by_route_and_once_after_a_crash(tmp_path: Path, monkeypatch: Any) -> None:
    fake = FakeClickHouse()
    config = AccessKeyConfig(access_key="key", routes={"metrics_1s": ["file"], "metrics_1m": ["file", "clickhouse"]})
    routes = lambda key: config if key == "key" else None  # noqa: E731
    pipeline, _ = make(tmp_path, fake, routes=routes)
    envelopes = (counter_envelope("c", 2, total=2, timestamp=T), counter_envelope("c", 3, total=5, timestamp=T + 1))
    # The crash: everything of the commit was durable except the emissions' removal.
    for windows in pipeline.windows.values():
        monkeypatch.setattr(windows, "done", lambda window: None)
    await pipeline.handle([record(0, *envelopes, key=b"key"), record(1, *envelopes, key=b"other")], [0])
    assert [(t, sorted(r[0] for r in rows)) for t, rows, _ in fake.inserts] == [
        ("metrics_1s", ["other"]), ("metrics_1m", ["key", "other"])
    ]
    expected = {
        "name": "c", "kind": "counter", "unit": "", "tags": {}, "series_id": series_id("key", "c", {}),
        "count": 2, "sum": 5.0, "min": 2.0, "max": 3.0, "last": 5.0, "last_timestamp": T + 1,
    }
    files = tmp_path / "key"
    assert sorted(p.name for p in files.iterdir() if not p.name.startswith(".")) == ["metrics_1m.jsonl", "metrics_1s.jsonl"]
    assert [json.loads(x) for x in (files / "metrics_1s.jsonl").read_text().splitlines()] == [
        {"window": "1s", "window_start": T // NS, **expected}
    ]
    assert [json.loads(x) for x in (files / "metrics_1m.jsonl").read_text().splitlines()] == [
        {"window": "1m", "window_start": T // NS // 60 * 60, **expected}
    ]
    # The restarted worker stores the emissions again: ClickHouse deduplicates them by token,
    # the files by the emissions' numbers.
    restarted = Pipeline(
        {t: TumblingWindows(w.state, size=w.size_s, lateness=0, idle_close=0) for t, w in pipeline.windows.items()},
        FileSink(tmp_path), ClickHouseSink(fake), dead_letter=pipeline._dead_letter, routes=routes,  # type: ignore[arg-type]
    )
    await restarted.tick([0])
    assert fake.inserts[2:] == fake.inserts[:2]
    assert len((files / "metrics_1s.jsonl").read_text().splitlines()) == 1
    assert len((files / "metrics_1m.jsonl").read_text().splitlines()) == 1
    assert restarted.windows["metrics_1s"].outbox([0]) == []


async def test_timer_windows_in_files_carry_quantiles_and_their_sketch(tmp_path: Path) -> None:
    config = AccessKeyConfig(access_key="key", routes={"metrics_1s": ["file"], "metrics_1m": []})
    pipeline, _ = make(tmp_path, FakeClickHouse(), routes=lambda key: config)
    timers = [timer_envelope("db", T, T + ms * 1_000_000, timestamp=T) for ms in (1, 2, 3, 100)]
    await pipeline.handle([record(0, *timers, key=b"key")], [0])
    (line,) = [json.loads(x) for x in (tmp_path / "key" / "metrics_1s.jsonl").read_text().splitlines()]
    assert (line["count"], line["min"], line["max"]) == (4, 1.0, 100.0)
    assert [round(line[q], 1) for q in ("p50", "p90", "p99")] == [2.0, 3.0, 3.0]  # x_k, k = floor(q * (n - 1))
    assert sum(line["sketch"].values()) == 4


async def test_windows_closed_together_are_one_block_named_by_their_group(tmp_path: Path, monkeypatch: Any) -> None:
    fake = FakeClickHouse()
    pipeline, _ = make(tmp_path, fake)
    for windows in pipeline.windows.values():
        monkeypatch.setattr(windows, "done", lambda window: None)  # a crash before the outbox is cleared
    seconds = [counter_envelope("c", 1, timestamp=T + s * NS) for s in range(3)]
    await pipeline.handle([record(0, *seconds), record(1, *seconds, partition=1)], [0, 1])
    # Three one-second windows per partition: one block per table and partition, not per window.
    minute = T // NS // 60 * 60
    assert [(t, sorted(r[3] for r in rows)) for t, rows, _ in fake.inserts] == [
        ("metrics_1s", [T // NS, T // NS + 1, T // NS + 2]), ("metrics_1s", [T // NS, T // NS + 1, T // NS + 2]),
        ("metrics_1m", [minute]), ("metrics_1m", [minute]),
    ]
    assert len({token for _, _, token in fake.inserts}) == 4
    # Stored again after the crash, each group carries the token it had.
    restarted = Pipeline(
        {t: TumblingWindows(w.state, size=w.size_s, lateness=0, idle_close=0) for t, w in pipeline.windows.items()},
        FileSink(tmp_path), ClickHouseSink(fake), dead_letter=pipeline._dead_letter,  # type: ignore[arg-type]
    )
    await restarted.tick([0, 1])
    assert [(t, token) for t, _, token in fake.inserts[4:]] == [(t, token) for t, _, token in fake.inserts[:4]]


def test_steps_cut_a_batch_by_the_bytes_of_its_records() -> None:
    def sized(offset: int, n: int) -> Record:
        return Record("raw", 0, offset, b"k", b"x" * n)

    batch = [sized(0, 40), sized(1, 50), sized(2, 10), sized(3, 200), sized(4, 1), sized(5, 99)]
    cut = steps(batch, 100)
    assert [[r.offset for r in step] for step in cut] == [[0, 1, 2], [3], [4, 5]]  # a large record alone
    assert [r for step in cut for r in step] == batch
    assert steps(batch, 10_000) == [batch]
    assert steps([], 100) == []
    assert [[r.offset for r in step] for step in steps(batch, 1)] == [[0], [1], [2], [3], [4], [5]]
    # A batch a little over the limit: two halves, not a full step and a sliver.
    even = [sized(i, 10) for i in range(10)]
    assert [len(step) for step in steps(even, 90)] == [5, 5]
    assert [len(step) for step in steps(even, 40)] == [4, 4, 2]


async def test_times_out_of_bounds_are_dropped_counted_and_open_no_window(tmp_path: Path) -> None:
    fake = FakeClickHouse()
    bounds = TimeBounds(future_ns=600 * NS, max_duration_ns=3600 * NS, raw_past_ns=30 * 86_400 * NS)
    pipeline, dead = make(tmp_path, fake, bounds=bounds)
    forever = timer_envelope("db", T, 2**63 - 1, timestamp=T)  # its window would never close
    old_log = log_envelope("a month ago", timestamp=T - 31 * 86_400 * NS)
    kept = counter_envelope("c", 1, timestamp=T)
    taken = Record("raw", 0, 0, b"k", EnvelopeBatch(batch=[forever, old_log, kept]).SerializeToString(), CT, timestamp_ns=T)
    await pipeline.handle([taken], [0])
    assert (pipeline.counters.out_of_bounds, pipeline.counters.points, pipeline.counters.logs, dead) == (2, 1, 0, [])
    await pipeline.tick([0], force=True)
    assert pipeline.open_windows([0]) == {"metrics_1s": 0, "metrics_1m": 0}
    assert sorted((t, [r[1] for r in rows]) for t, rows, _ in fake.inserts) == [("metrics_1m", ["c"]), ("metrics_1s", ["c"])]
