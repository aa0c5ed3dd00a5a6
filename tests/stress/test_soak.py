"""Soak: the gateway and a worker, as processes, under a steady load for ten minutes
(`SLUICE_SOAK_SECONDS`): every envelope counted exactly (by the gateway's accounting and in ClickHouse), RSS growth under 10 %, no error logs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sluice.client import SluiceClient, counter_envelope, log_envelope
from sluice.ingress import issue_token
from sluice.keys import AccessKeyConfig, JsonKeyStore
from sluice.settings import Settings
from sluice.tansu import free_port, wait_for_port
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import assert_accounted

SECONDS = float(os.environ.get("SLUICE_SOAK_SECONDS", "600"))
SAMPLE_EVERY = max(1.0, SECONDS / 60)  # RSS samples: enough after the first 20 % of even a short run
RATE = 2000  # envelopes/s: half logs, half counters


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 300)  # the load, then the drain and checks
def test_soak(settings: Settings, unique: str) -> None:
    key = f"ak_{unique}"
    JsonKeyStore(settings.access_keys_path).put(AccessKeyConfig(access_key=key))
    settings.gateway.listen = f"127.0.0.1:{free_port()}"
    settings.gateway.metrics_listen = f"127.0.0.1:{free_port()}"
    gateway_log = settings.data_dir / "gateway.log"
    gateway = subprocess.Popen([sys.executable, "-m", "sluice.cli.main", "gateway"],
                               env=dict(os.environ) | settings.to_env(),
                               stdout=open(gateway_log, "wb"), stderr=subprocess.STDOUT)
    worker = WorkerProcess(settings)
    try:
        assert wait_for_port("127.0.0.1", int(settings.gateway.listen.rsplit(":", 1)[1]), 30)
        worker.start()
        samples: list[tuple[float, float, float]] = []

        async def load() -> int:
            sent = 0
            token = issue_token(settings.auth, key, 3600 + SECONDS)
            async with SluiceClient(settings.gateway.listen, key, token) as client:
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < SECONDS:
                    now = time.time_ns()
                    batch = [log_envelope(f"line {sent + i}", timestamp=now) for i in range(RATE // 20)]
                    batch += [counter_envelope("soak", 1, timestamp=now) for _ in range(RATE // 20)]
                    sent += await client.send(batch)
                    if not samples or elapsed - samples[-1][0] >= SAMPLE_EVERY:
                        samples.append((elapsed, rss_mib(gateway.pid), rss_mib(worker.proc.pid)))  # type: ignore[union-attr]
                    await asyncio.sleep(max(0.0, started + (sent / RATE) - time.monotonic()))
            return sent

        sent = asyncio.run(load())
        asyncio.run(assert_accounted(int(settings.gateway.metrics_listen.rsplit(":", 1)[1]), key,
                                     sent=sent, acknowledged=sent, rejected={}, refused_calls={}))
        asyncio.run(worker.caught_up(120))
        logs, points = asyncio.run(worker.query(
            "SELECT (SELECT count() FROM sluice.logs FINAL), (SELECT sum(count) FROM sluice.metrics_1s)"
        ))[0]
        assert (logs, points) == (sent // 2, sent // 2)
        warm = [s for s in samples if s[0] >= SECONDS * 0.2]
        first, last = warm[0], warm[-1]
        print(f"\nsoak {SECONDS:g}s: {sent} envelopes; RSS gateway {first[1]:.0f} -> {last[1]:.0f} MiB, "
              f"worker {first[2]:.0f} -> {last[2]:.0f} MiB")
        assert last[1] < first[1] * 1.10 and last[2] < first[2] * 1.10
        assert worker.stop() == 0
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
    finally:
        for proc in (gateway, worker.proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
    errors = [line for path in (gateway_log, worker.log_path)
              for line in path.read_text(errors="replace").splitlines() if " ERROR " in line or "[ERROR]" in line]
    assert errors == []
