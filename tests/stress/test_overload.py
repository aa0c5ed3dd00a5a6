"""Overload: clients push as fast as they can into a gateway whose broker is slowed down by a
fault proxy, under each buffer policy. The gateway's memory stays bounded, what is dropped is
exactly what the counters say, and once the load stops the gateway serves normally again.

The quick versions (a few seconds each) run in `make test`; the 60-second ones in `make test-slow`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sluice.client import ClientError, SluiceClient, log_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import issue_token
from sluice.keys import AccessKeyConfig, JsonKeyStore
from sluice.settings import Settings
from sluice.tansu import Tansu, free_port, wait_for_port
from tests.fixtures.proxy import FaultProxy
from tests.integration.gateway_helpers import assert_accounted, envelopes_of, read_topic, scrape

BUFFER = 4 << 20  # the gateway's buffer: 4 MiB


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def overload(settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str, policy: str,
             seconds: float) -> None:
    _, proxy = proxied_broker
    key = f"ak_{unique}"
    JsonKeyStore(settings.access_keys_path).put(AccessKeyConfig(access_key=key))
    settings.kafka.bootstrap = f"127.0.0.1:{proxy.port}"
    settings.gateway.listen = f"127.0.0.1:{free_port()}"
    settings.gateway.metrics_listen = f"127.0.0.1:{free_port()}"
    settings.gateway.buffer_policy = policy  # type: ignore[assignment]
    settings.gateway.buffer_bytes = BUFFER
    settings.gateway.block_timeout = 0.5
    settings.gateway.spool_max_bytes = 64 << 20
    settings.gateway.spool_segment_bytes = 4 << 20
    env = dict(os.environ) | settings.to_env()
    log = open(settings.data_dir / "gateway.log", "wb")
    gateway = subprocess.Popen([sys.executable, "-m", "sluice.cli.main", "gateway"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port("127.0.0.1", int(settings.gateway.listen.rsplit(":", 1)[1]), 30)
        metrics_port = int(settings.gateway.metrics_listen.rsplit(":", 1)[1])
        proxy.latency = 0.05  # every read of the broker's connection waits 50 ms: Kafka is slow
        acknowledged, refused = asyncio.run(flood(settings, key, seconds))
        during = scrape(metrics_port)
        proxy.latency = 0.0
        recovered_in, attempts = asyncio.run(recovery(settings, key))
        calls = sum(refused.values())
        # Every call's envelopes were read; those of calls answered UNAVAILABLE may have reached
        # Kafka after the answer.
        ledger = asyncio.run(assert_accounted(
            metrics_port, key, sent=200 * (acknowledged // 200 + calls) + 10 * attempts, acknowledged=acknowledged + 10,
            refused_calls=refused | {"UNAVAILABLE": refused.get("UNAVAILABLE", 0) + attempts - 1},
            unsure=200 * calls + 10 * (attempts - 1), timeout=60,
        ))
        rss = peak_rss_mib(gateway.pid)
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
    finally:
        if gateway.poll() is None:
            gateway.kill()
        log.close()
    stored = len(envelopes_of(asyncio.run(read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))))
    dropped = sum(v for (name, labels), v in during.items() if name == "sluice_gateway_dropped_envelopes_total")
    print(f"\n{policy}: {seconds:g}s, acknowledged {acknowledged}, refused calls {refused}, "
          f"dropped {dropped:.0f}, stored {stored}, peak RSS {rss:.0f} MiB, recovered in {recovered_in:.2f}s; "
          f"gateway: {ledger}")
    assert dropped == ledger.dropped  # all drops happened under load
    assert acknowledged > 0 and recovered_in < 5
    assert rss < 300, f"gateway peak RSS {rss:.0f} MiB"
    if policy in ("drop-newest", "drop-oldest"):
        assert dropped > 0 and stored == acknowledged + 10 - dropped  # + the 10 sent to check recovery
    else:  # the calls were slowed down (or refused, retriable) instead: nothing dropped
        assert dropped == 0 and stored == acknowledged + 10
    assert stored == ledger.acknowledged + ledger.spooled - ledger.replayed  # what Kafka and the spool hold


async def flood(settings: Settings, key: str, seconds: float) -> tuple[int, dict[str, int]]:
    """Eight clients sending 200-envelope batches back to back for ``seconds``: the envelopes
    acknowledged, the calls refused by code."""
    token = issue_token(settings.auth, key, 3600)
    batch = [log_envelope(b"y" * 200, timestamp=time.time_ns(), source_id="s") for _ in range(200)]
    acknowledged = 0
    refused: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal acknowledged, refused
        async with SluiceClient(settings.gateway.listen, key, token, retry=RetryPolicy.never()) as c:
            while time.monotonic() < deadline:
                try:
                    n = await c.send(batch)
                    assert n == 200
                    acknowledged += n
                except ClientError as exc:
                    assert exc.retriable, exc
                    refused[exc.code.name] = refused.get(exc.code.name, 0) + 1

    await asyncio.gather(*(client() for _ in range(8)))
    return acknowledged, refused


async def recovery(settings: Settings, key: str) -> tuple[float, int]:
    """Seconds until a small call goes through again, and the calls it took (retried by hand, so
    that each is counted)."""
    started = time.monotonic()
    attempts = 0
    async with SluiceClient(settings.gateway.listen, key, issue_token(settings.auth, key, 60),
                            retry=RetryPolicy.never()) as c:
        while True:
            attempts += 1
            try:
                assert await c.send([log_envelope("after", timestamp=time.time_ns(), source_id="s") for _ in range(10)]) == 10
                return time.monotonic() - started, attempts
            except ClientError as exc:
                assert exc.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - started < 30, exc
                await asyncio.sleep(0.05)


POLICIES = ["block", "drop-newest", "drop-oldest", "spool"]


@pytest.mark.parametrize("policy", POLICIES)
def test_overload_quick(settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str, policy: str) -> None:
    overload(settings, proxied_broker, unique, policy, seconds=3)


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_overload_60s(settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str, policy: str) -> None:
    overload(settings, proxied_broker, unique, policy, seconds=60)
