"""The worker's pipeline in one process, without Kafka: for profiling what the worker does per
envelope, where ``sluice bench worker`` measures it with its broker and threads.

``python -m bench.inprocess [--envelopes N] [--per-record N] [--no-clickhouse] [--profile FILE]``
runs the worker scenario's load (records of 500 envelopes over two partitions) through
:class:`Pipeline` in batches and steps of the worker's sizes: decode, 1s and 1m windows, the file
sink, the window state in the worker's own :class:`FaustTableState` over a memory table, and
chDB through the worker's :class:`ClickHouse` (``--no-clickhouse``: blocks are counted, not
inserted). It prints one JSON line: envelopes/s, CPU µs per envelope, the CPU seconds of
``process`` and ``commit``, the cyclic collector's collections and seconds, and the process's
RSS before the run and at its peak. ``--profile`` writes cProfile's stats.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import MiB, SelfMeter, envelopes, encoded, records_of
from sluice.records import CONTENT_TYPE_BATCH, H_CONTENT_TYPE
from sluice.runtime import WORKER_GC_MIDDLE, tune_process
from sluice.settings import Settings, WorkerSettings, load_settings
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.pipeline import Pipeline, Record, steps
from sluice.streams.sinks.clickhouse import ClickHouseSink
from sluice.streams.sinks.files import FileSink
from sluice.streams.state import FaustTableState
from sluice.streams.windows import TumblingWindows

ACCESS_KEY = "ak_bench"
BATCH_RECORDS = WorkerSettings().batch_records  # the worker's defaults
BATCH_BYTES = WorkerSettings().batch_bytes


class MemoryTable:
    """What :class:`FaustTableState` uses of a Faust table with the memory store; changelog
    messages are dropped (there is no Kafka here)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def send_changelog(self, partition: int, key: str, value: bytes | None) -> None:
        pass


class CountingClickHouse:
    """Counts the rows of each insert (``--no-clickhouse``)."""

    def __init__(self) -> None:
        self.rows = 0

    async def insert_columns(self, table: str, data: Sequence[Sequence[Any]], columns: Sequence[str], token: str) -> None:
        self.rows += len(data[0]) if data else 0


def _values(n: int, per_record: int) -> list[bytes]:
    # From the start of the hour before last: windows fall alike in every run, and the rows are
    # younger than the tables' TTLs (older ones are dropped as they are inserted, which is not
    # the work being measured).
    hour = 3600 * 10**9
    data = encoded(envelopes(n, seed=2, span_s=max(1.0, n / 6_667), t0=(time.time_ns() // hour - 2) * hour))
    return records_of(data, per_record=per_record)


def load(n: int, per_record: int = 500) -> list[Record]:
    """The worker scenario's records (``n`` envelopes), two partitions, in offset order; made in a
    child process, so that this one's RSS holds only the records."""
    with ProcessPoolExecutor(1) as pool:
        values = pool.submit(_values, n, per_record).result()
    headers = [(H_CONTENT_TYPE, CONTENT_TYPE_BATCH)]
    return [
        Record("raw", i % 2, i // 2, f"{ACCESS_KEY}_{i % 2}".encode(), v, headers) for i, v in enumerate(values)
    ]


async def run(n: int, *, clickhouse: bool, workdir: Path, per_record: int = 500) -> dict[str, Any]:
    records = load(n, per_record)
    ch: Any = ClickHouse(Settings(data_dir=workdir)) if clickhouse else CountingClickHouse()
    if clickhouse:
        await ch.warm_up()
    pipeline = Pipeline(
        {
            "metrics_1s": TumblingWindows(FaustTableState(MemoryTable()), size=1, lateness=0, idle_close=5),
            "metrics_1m": TumblingWindows(FaustTableState(MemoryTable()), size=60, lateness=0, idle_close=5),
        },
        FileSink(workdir / "files"), ClickHouseSink(ch), dead_letter=_no_dead_letters,
    )
    cpu = {"process": 0.0, "commit": 0.0}
    process, commit = pipeline.process, pipeline.commit

    def timed_process(batch: Iterable[Record]) -> None:
        t = time.process_time()
        process(batch)
        cpu["process"] += time.process_time() - t

    async def timed_commit(partitions: Sequence[int], *, force: bool = False) -> None:
        t = time.process_time()
        await commit(partitions, force=force)
        cpu["commit"] += time.process_time() - t

    pipeline.process = timed_process  # type: ignore[method-assign,assignment]
    pipeline.commit = timed_commit  # type: ignore[method-assign]
    collections = {"n": 0, "s": 0.0, "at": 0.0}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections["at"] = time.perf_counter()
        else:
            collections["n"] += 1
            collections["s"] += time.perf_counter() - collections["at"]

    meter = SelfMeter(interval=0.01)
    tune_process(load_settings(), middle=WORKER_GC_MIDDLE)  # as `sluice worker` does, SLUICE_* honoured
    gc.callbacks.append(on_gc)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for i in range(0, len(records), BATCH_RECORDS):
            for step in steps(records[i:i + BATCH_RECORDS], BATCH_BYTES):
                await pipeline.handle(step, [0, 1])
        await pipeline.tick([0, 1], force=True)
    finally:
        gc.callbacks.remove(on_gc)
        _, peak = meter.stop()
    wall, used = time.perf_counter() - t0, time.process_time() - c0
    if clickhouse:
        await ch.stop()
    c = pipeline.counters
    return {
        "envelopes": c.envelopes, "metric_rows": c.metric_rows, "rows_written": pipeline.clickhouse.rows_written,
        "envelopes_per_s": round(c.envelopes / wall), "cpu_us_per_envelope": round(used / c.envelopes * 1e6, 2),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "collections": collections["n"], "collection_s": round(collections["s"], 3),
        "rss_mib": {"before": round(meter.samples[0][2] / MiB), "peak": round(peak / MiB)},
    }


async def _no_dead_letters(record: Record, reason: str) -> None:
    raise RuntimeError(f"the bench load has no bad records, got {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=1_000_000)
    parser.add_argument("--per-record", type=int, default=500, help="envelopes per record (the gateway's: 1000)")
    parser.add_argument("--no-clickhouse", action="store_true", help="count the inserts' rows instead of inserting")
    parser.add_argument("--profile", type=Path, help="write cProfile stats here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-inprocess-") as tmp:
        coro = run(args.envelopes, clickhouse=not args.no_clickhouse, workdir=Path(tmp), per_record=args.per_record)
        if args.profile:
            profiler = cProfile.Profile()
            result = profiler.runcall(asyncio.run, coro)
            profiler.dump_stats(args.profile)
        else:
            result = asyncio.run(coro)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
