"""Refusals through the real processes: times out of bounds and out of retention, malformed token
claims, a placeholder secret at start, and the access keys /metrics names (or not).

Each refusal is exact (status and message), counted, and leaves nothing published.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import grpc
import jwt
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from sluice.client import ClientError, SluiceClient, counter_envelope, event_envelope, log_envelope, timer_envelope
from sluice.ingress import Gateway, issue_token
from sluice.records import CONTENT_TYPE_BATCH
from sluice.keys import Limits
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch, Span
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key, metadata_for, read_topic, scrape
from tests.integration.protocol_helpers import with_protocols

NS = 1_000_000_000
DAY = 86_400 * NS
INT64_MAX = 2**63 - 1
PLACEHOLDER = "replace-with-32-or-more-random-bytes"  # the shipped k8s Secret's


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    async with Gateway(with_protocols(settings, unique)) as gw:
        yield gw


@pytest_asyncio.fixture
async def key(gateway: Gateway, unique: str) -> str:
    return await add_key(gateway.keys, f"ak_refusals_{unique}")


def samples_named(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in scrape(port).items() if n == name}


def span(start: int, end: int) -> Envelope:
    return Envelope(span=Span(trace_id=b"t" * 16, span_id=b"s" * 8, name="GET", start=start, end=end))


async def test_times_out_of_bounds_or_retention_are_refused_naming_the_field(gateway: Gateway, key: str) -> None:
    now = time.time_ns()
    old_log, old_point = now - 31 * DAY, now - 2 * DAY
    refused = [
        (timer_envelope("db", now, INT64_MAX), f"envelope[0].timer.stop: {INT64_MAX} is more than 600s in the future"),
        (timer_envelope("db", now - 2 * DAY, now), "envelope[0].timer: lasts 172800s, longer than 86400s (gateway.max_duration_seconds)"),
        (timer_envelope("db", 0, now), "envelope[0].timer.start: 0 is not set"),
        (span(now, INT64_MAX), f"envelope[0].span.end: {INT64_MAX} is more than 600s in the future"),
        (event_envelope("deployed", timestamp=INT64_MAX), f"envelope[0].timestamp: {INT64_MAX} is more than 600s in the future"),
        (log_envelope("a month ago", timestamp=old_log),
         f"envelope[0].timestamp: {old_log} is older than the retention of logs, events and spans (30 days, clickhouse.ttl_days_raw)"),
        (counter_envelope("requests", 1, timestamp=old_point),
         f"envelope[0].timestamp: {old_point} is older than the 86400s metric points are kept for (worker.max_lateness)"),
    ]
    async with SluiceClient(gateway.address, key, issue_token(gateway.settings.auth, key, 60)) as client:
        for envelope, message in refused:
            with pytest.raises(ClientError) as info:
                await client.send([envelope])
            assert (info.value.code, info.value.details, info.value.accepted) == (grpc.StatusCode.INVALID_ARGUMENT, message, 0)
        assert await client.send([log_envelope("29 days ago", timestamp=now - 29 * DAY), timer_envelope("db", now - NS, now)]) == 2
    assert gateway.metrics_port is not None
    assert samples_named(gateway.metrics_port, "sluice_gateway_invalid_requests_total") == {
        (("reason", "timer"),): 3, (("reason", "span"),): 1, (("reason", "timestamp"),): 1, (("reason", "retention"),): 2,
    }
    stored = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert len(stored) == 1  # the accepted call's record alone


async def test_a_signed_token_with_a_string_exp_is_unauthenticated_over_grpc_and_http(gateway: Gateway, key: str) -> None:
    secret = gateway.settings.auth.jwt_secret
    assert secret is not None
    now = int(time.time())
    token = jwt.encode({"sub": key, "iat": now, "exp": str(now + 60)}, secret.get_secret_value(), algorithm="HS256")
    message = "malformed token: its 'exp' claim is a string, not a number of seconds since the epoch"
    async with SluiceClient(gateway.address, key, token) as client:
        with pytest.raises(ClientError) as info:
            await client.send([log_envelope("x")])
    assert (info.value.code, info.value.details) == (grpc.StatusCode.UNAUTHENTICATED, message)
    assert gateway.protocols.http is not None
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{gateway.protocols.http.port}/api/v2/write?bucket=b",
                             data=b"up v=1", headers={"Authorization": f"Token {token}"}) as r:
            assert r.status == 401
            assert message in await r.text()
    assert gateway.metrics_port is not None
    assert samples_named(gateway.metrics_port, "sluice_gateway_auth_failures_total") == {(("reason", "malformed_claim"),): 2}


def test_the_gateway_refuses_to_start_with_the_placeholder_secret(settings: Settings) -> None:
    env = settings.to_env() | {"SLUICE_AUTH_JWT_SECRET": PLACEHOLDER, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "sluice.cli.main", "gateway"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "sluice: auth.jwt_secret looks like a placeholder or a made-up string (about 74 bits of randomness, "
        "at least 128 are needed) (hint: use 32 random bytes, e.g. `openssl rand -base64 32` or "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)\n"
    )


@pytest.mark.parametrize("key_labels", [False, True])
async def test_metrics_name_access_keys_only_when_configured(
    settings: Settings, worker_process: WorkerProcess, unique: str, key_labels: bool
) -> None:
    settings.metrics_key_labels = key_labels
    key = f"ak_tenant_{unique}"
    async with Gateway(settings) as gateway:
        await add_key(gateway.keys, key, limits=Limits(events_per_second=100))  # the worker's throttle counts per key
        worker_process.start()
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60)) as client:
            assert await client.send([log_envelope("hello"), log_envelope("again"), counter_envelope("c", 1)]) == 3
        await worker_process.caught_up()
        assert gateway.metrics_port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as r:
            gateway_text = r.read().decode()
    worker_text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{worker_process.url}/metrics").read().decode())
    if key_labels:
        assert f'sluice_gateway_received_envelopes_total{{access_key="{key}",entry_point="Send"}} 3.0' in gateway_text
        assert f'sluice_worker_throttle_passed_total{{access_key="{key}"}} 2' in worker_text
    else:
        assert key not in gateway_text and "access_key" not in gateway_text
        assert key not in worker_text and "access_key" not in worker_text
        assert 'sluice_gateway_received_envelopes_total{entry_point="Send"} 3.0' in gateway_text
        assert "sluice_worker_throttle_passed_total 2.0\n" in worker_text


async def test_the_worker_drops_and_counts_times_out_of_bounds_that_bypassed_the_gateway(
    settings: Settings, worker_process: WorkerProcess, unique: str
) -> None:
    """A record written to the raw topic by another producer: its timer stopping in 2262 and its log
    older than the retention are dropped and counted; no window stays open; SIGTERM stops at once."""
    key = f"ak_bypass_{unique}"
    now = time.time_ns() // NS * NS - 5 * NS
    batch = EnvelopeBatch(batch=[
        timer_envelope("db", now, INT64_MAX, timestamp=now, source_id="s"),
        log_envelope("a month ago", timestamp=now - 31 * DAY, source_id="s"),
        counter_envelope("requests", 1, timestamp=now, source_id="s"),
    ])
    worker_process.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka.raw_topic, batch.SerializeToString(), key=key.encode(),
                                     partition=0, headers=[("content-type", CONTENT_TYPE_BATCH)])
    finally:
        await producer.stop()
    await worker_process.caught_up()  # every window closed
    counters = worker_process.status()["counters"]
    assert (counters["out_of_bounds"], counters["points"], counters["logs"]) == (2, 1, 0)
    assert await worker_process.query(
        f"SELECT name, sum(count) FROM sluice.metrics_1s WHERE access_key = '{key}' GROUP BY name"
    ) == [["requests", 1]]
    started = time.monotonic()
    assert worker_process.stop(timeout=20) == 0
    assert time.monotonic() - started < 15
