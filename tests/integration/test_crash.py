"""Faults in the middle of a known stream: the worker killed with SIGKILL and restarted, and
ClickHouse unavailable for a while. Afterwards ClickHouse totals and file lines equal exactly
what was sent: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from sluice.client import counter_envelope, log_envelope, timer_envelope
from sluice.ingress import Gateway
from sluice.settings import Settings
from sluice.streams.query import wait_caught_up
from sluice.v1.envelope_pb2 import Envelope
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.test_end_to_end import NS, client_for, gateway  # noqa: F401 (gateway: a fixture)

T0 = (time.time_ns() // NS // 60 - 3) * 60 * NS  # a whole minute three minutes ago


@dataclass
class Sent:
    """What the stream held, per access key."""

    logs: dict[str, list[str]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)  # metric points
    sums: Counter[str] = field(default_factory=Counter)  # counter deltas
    timers: Counter[str] = field(default_factory=Counter)


def batch(key: str, i: int, sent: Sent) -> list[Envelope]:
    """Batch ``i`` of a key: 10 logs, 10 counter increments and 2 timers, 50ms of event time."""
    at = T0 + i * NS // 20
    payloads = [f"{key} {i} {j}" for j in range(10)]
    sent.logs.setdefault(key, []).extend(payloads)
    envelopes = [log_envelope(p, timestamp=at + j) for j, p in enumerate(payloads)]
    envelopes += [counter_envelope("requests", j + 1, timestamp=at + j) for j in range(10)]
    envelopes += [timer_envelope("db", at - (j + 1) * 1_000_000, at) for j in range(2)]
    sent.counts[key] += 12
    sent.sums[key] += sum(range(1, 11))
    sent.timers[key] += 2
    return envelopes


async def send_stream(
    gateway: Gateway, keys: list[str], batches: int, sent: Sent, *, pause: float = 0.0,
    until: asyncio.Event | None = None,
) -> None:
    """``batches`` more batches per key (numbered on from what was sent); with ``until``, more
    until it is set."""
    clients = [client_for(gateway, k) for k in keys]
    i = first = len(sent.logs.get(keys[0], [])) // 10
    try:
        while i < first + batches or (until is not None and not until.is_set()):
            for key, client in zip(keys, clients):
                envelopes = batch(key, i, sent)
                assert await client.send(envelopes) == len(envelopes)
            i += 1
            await asyncio.sleep(pause)
    finally:
        for client in clients:
            await client.close()


def file_lines(settings: Settings, key: str) -> list[str]:
    folder = settings.files_dir / key
    rotated = sorted(folder.glob("logs.*.jsonl"))
    return [json.loads(line)["payload"] for p in [*rotated, folder / "logs.jsonl"] for line in p.read_text().splitlines()]


async def assert_exactly_sent(worker: WorkerProcess, sent: Sent) -> None:
    assert await wait_caught_up(worker.settings, worker.url, 60, ("metrics_1s", "metrics_1m")), worker.status()
    logs = await worker.query("SELECT access_key, count() FROM sluice.logs FINAL GROUP BY access_key ORDER BY 1")
    assert logs == [[k, len(v)] for k, v in sorted(sent.logs.items())]
    for table in ("metrics_1s", "metrics_1m"):
        # No FINAL, no dedup at query time: a partial stored twice would show here.
        rows = await worker.query(
            f"SELECT access_key, sum(count), sumIf(sum, name = 'requests'), "
            f"arraySum(mapValues(sumMap(sketch))) FROM sluice.{table} GROUP BY access_key ORDER BY 1"
        )
        assert rows == [[k, sent.counts[k], float(sent.sums[k]), sent.timers[k]] for k in sorted(sent.counts)], table
    for key, payloads in sent.logs.items():
        assert file_lines(worker.settings, key) == payloads


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_killed_worker_restarts_without_losing_or_doubling(
    gateway: Gateway, worker_process: WorkerProcess, settings: Settings, unique: str, store: str
) -> None:
    keys = [await add_key(gateway.keys, f"ak_{n}_{unique}") for n in ("a", "b", "c")]
    settings.worker.store = store  # rocksdb: the windows are read back from local files, then the changelog
    settings.worker.recovery_consistency_check = False  # Tansu's end offsets fall short of the last record
    settings.worker.batch_records = 4  # many small commits: the kill lands between and inside them
    settings.worker.file_max_bytes = 16 * 1024  # rotations happen around the crash too
    settings.worker.file_keep = 1000
    worker_process.start()
    sent = Sent()
    # The stream goes on until after the kill, however long the worker takes to start.
    ended = asyncio.Event()
    stream = asyncio.ensure_future(send_stream(gateway, keys, 100, sent, pause=0.02, until=ended))
    try:
        deadline = time.monotonic() + 60
        while (status := await asyncio.to_thread(worker_process.status))["counters"]["records"] < 60:
            assert time.monotonic() < deadline and not stream.done(), status
            await asyncio.sleep(0.02)
        worker_process.kill()
        killed_at = status["counters"]
        # Ten more batches per key arrive while the worker is down.
        after_kill = len(sent.logs[keys[0]]) + 10 * 10
        while len(sent.logs[keys[0]]) < after_kill:
            assert time.monotonic() < deadline + 60 and not stream.done()
            await asyncio.sleep(0.02)
    finally:
        ended.set()
    await stream
    worker_process.start()
    await assert_exactly_sent(worker_process, sent)
    assert 60 <= killed_at["records"] < len(sent.logs[keys[0]]) // 10 * len(keys)  # killed mid-stream
    assert all(len(list((settings.files_dir / k).glob("logs.*.jsonl"))) >= 3 for k in keys)  # rotated


async def test_clickhouse_unavailable_for_a_while(
    gateway: Gateway, worker_process: WorkerProcess, settings: Settings, unique: str
) -> None:
    keys = [await add_key(gateway.keys, f"ak_{n}_{unique}") for n in ("a", "b")]
    # Another process owns the chDB directory: every insert of the worker fails until it stops.
    settings.chdb_path.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, clickhouse_connect; "
            f"c = clickhouse_connect.get_client(dsn='chdb://{settings.chdb_path.resolve()}'); "
            "c.query('SELECT 1'); print('locked', flush=True); sys.stdin.read()"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        worker_process.start()
        sent = Sent()
        await send_stream(gateway, keys, 20, sent)
        for restart in (True, False):
            deadline = time.monotonic() + 30
            while (status := await asyncio.to_thread(worker_process.status))["clickhouse_retries"] < 3:
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.1)
            assert status["rows_written"] == {} and status["positions"] == {}
            if restart:  # killed while windows wait in the outbox and files are half written
                worker_process.kill()
                await send_stream(gateway, keys, 1, sent)
                worker_process.start()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    await assert_exactly_sent(worker_process, sent)
