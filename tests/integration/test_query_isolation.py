"""The query API cannot harm ingestion: real gateway, Tansu, `sluice worker` process and chDB.

Statements that would write are refused and the inserts go on; a read runs apart from the inserts
(rows stored during it are visible during it), is cut at ``query.timeout``, waits at most
``query.queue_timeout`` for a slot, and does not hold back a SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import time

from sluice.client import log_envelope
from sluice.ingress import Gateway
from sluice.streams.query import admin_credential
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.query_helpers import ask, sleepy_read
from tests.integration.test_end_to_end import client_for, gateway  # noqa: F401 (gateway: a fixture)


async def stored_logs(worker: WorkerProcess, key: str) -> int:
    return int((await worker.query(f"SELECT count() FROM sluice.logs FINAL WHERE access_key = '{key}'"))[0][0])


async def wait_stored(worker: WorkerProcess, key: str, want: int, timeout: float) -> float:
    """Seconds until ``want`` logs of ``key`` are readable; fails after ``timeout``."""
    start = time.monotonic()
    while (n := await stored_logs(worker, key)) != want:
        assert n < want and time.monotonic() - start < timeout, f"{n} logs of {want} after {timeout}s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_refused_statements_timeouts_and_busy_reads_leave_ingestion_running(
    gateway: Gateway, worker_process: WorkerProcess, unique: str
) -> None:
    settings = worker_process.settings
    settings.query.timeout, settings.query.max_concurrent, settings.query.queue_timeout = 3.0, 1, 0.5
    key = await add_key(gateway.keys, f"ak_{unique}")
    worker_process.start()
    url, admin = worker_process.url, admin_credential(settings)

    # A read over query.timeout is cut there; one more read meanwhile finds no slot: 429.
    started = time.monotonic()
    slow = asyncio.create_task(asyncio.to_thread(ask, url, {"sql": sleepy_read(10)}, admin))
    await asyncio.sleep(1.0)
    busy_at = time.monotonic()
    assert await asyncio.to_thread(ask, url, {"sql": "SELECT 1"}, admin) == (429, {"error": (
        "busy: 1 queries are running (query.max_concurrent) and none finished within "
        "query.queue_timeout (0.5s); retry later"
    )})
    assert 0.5 <= time.monotonic() - busy_at < 2.0
    assert await slow == (408, {"error": "the query ran longer than query.timeout (3s) and was stopped"})
    assert 3.0 <= time.monotonic() - started < 10.0

    for sql in (
        "OPTIMIZE TABLE sluice.logs FINAL",
        "INSERT INTO sluice.logs (access_key, payload) VALUES ('x', 'y')",
        "CREATE TABLE sluice.intruder (x UInt8) ENGINE = Memory",
        "SET readonly = 0",
    ):
        status, answer = await asyncio.to_thread(ask, url, {"sql": sql}, admin)
        assert (status, answer["error"].startswith("refused: queries are read-only (readonly mode): ")) == (403, True)

    async with client_for(gateway, key) as client:
        for start in range(0, 1000, 100):
            batch = [log_envelope(f"line {i}", timestamp=time.time_ns()) for i in range(start, start + 100)]
            assert await client.send(batch) == 100
    await wait_stored(worker_process, key, 1000, timeout=30)
    assert await worker_process.query("SELECT count() FROM system.tables WHERE name = 'intruder'") == [[0]]

    counters = worker_process.status()["counters"]
    assert {k: counters[f"queries_{k}"] for k in ("timed_out", "busy", "readonly")} == {
        "timed_out": 1, "busy": 1, "readonly": 4
    }
    assert counters["queries_ok"] >= 2 and worker_process.status()["clickhouse_retries"] == 0
    stopping = time.monotonic()
    assert worker_process.stop(timeout=30) == 0
    assert time.monotonic() - stopping < 30
    assert "Traceback" not in worker_process.log_path.read_text()


async def test_a_long_read_holds_back_neither_inserts_nor_a_stop(
    gateway: Gateway, worker_process: WorkerProcess, unique: str
) -> None:
    settings = worker_process.settings
    settings.query.timeout = 120.0
    key = await add_key(gateway.keys, f"ak_{unique}")
    worker_process.start()
    url, admin = worker_process.url, admin_credential(settings)

    long_read = asyncio.create_task(asyncio.to_thread(ask, url, {"sql": sleepy_read(60)}, admin))
    await asyncio.sleep(1.0)
    latencies = []
    async with client_for(gateway, key) as client:
        for n in range(1, 6):  # about 15 s
            sent = time.monotonic()
            assert await client.send([log_envelope(f"round {n} line {i}") for i in range(100)]) == 100
            latencies.append(time.monotonic() - sent + await wait_stored(worker_process, key, 100 * n, timeout=10))
            assert not long_read.done(), await long_read
            await asyncio.sleep(max(0.0, 3.0 - latencies[-1]))
    assert max(latencies) < 10, latencies

    # SIGTERM while the read still has about 40 s to go: it is cancelled, not waited for.
    assert worker_process.proc is not None
    stopping = time.monotonic()
    worker_process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker_process.proc.wait, 30) == 0
    assert time.monotonic() - stopping < 15
    status, answer = await long_read
    assert (status, answer) == (503, {"error": "the query was cancelled: the worker is stopping"})
    assert "Traceback" not in worker_process.log_path.read_text()
