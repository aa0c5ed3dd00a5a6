"""A key's byte rate slows its clients to the rate, never below, through real gRPC against
Tansu: streams offered 1.5x and 3x the rate, and ``sluice send`` as a user runs it, are
acknowledged at the rate with every envelope stored once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from sluice.client import SluiceClient, counter_envelope, log_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import Gateway, issue_token
from sluice.keys import Limits
from sluice.settings import Settings
from sluice.v1 import ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope
from tests.integration.gateway_helpers import (
    add_key,
    assert_accounted,
    envelopes_of,
    metadata_for,
    read_topic,
    scrape,
    singles,
)

RATE = 100_000  # bytes/s
T = time.time_ns()  # recent: times older than the retention or the lateness are refused


def lines(n: int) -> list[Envelope]:
    """``n`` log envelopes of about 1 kB, each its own, sized the same however they are sent."""
    return [log_envelope(f"{i:06d} ".encode() + b"x" * 1000, timestamp=T, source_id="app") for i in range(n)]


async def offered(envelopes: list[Envelope], batch: int, bytes_per_second: float) -> AsyncIterator[list[Envelope]]:
    """``envelopes`` in batches, offered no faster than ``bytes_per_second``."""
    start = time.monotonic()
    sent = 0
    for i in range(0, len(envelopes), batch):
        part = envelopes[i : i + batch]
        await asyncio.sleep(max(0.0, start + sent / bytes_per_second - time.monotonic()))
        sent += sum(e.ByteSize() for e in part)
        yield part


@pytest.mark.parametrize("over", [1.5, 3.0])
async def test_a_stream_over_its_rate_is_acknowledged_at_the_rate(settings: Settings, unique: str, over: float) -> None:
    envelopes = lines(400)
    size = sum(e.ByteSize() for e in envelopes)
    burst = 10 * envelopes[0].ByteSize()  # one batch: the rate, not the burst, sets the pace
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}", limits=Limits(bytes_per_second=RATE, bytes_burst=burst))
        acks: list[tuple[float, int]] = []
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60),
                                retry=RetryPolicy(max_attempts=3, max_elapsed=10)) as client:
            started = time.monotonic()
            accepted = await asyncio.wait_for(
                client.send_stream(offered(envelopes, 10, RATE * over), max_stream_envelopes=100,
                                   on_ack=lambda n: acks.append((time.monotonic() - started, n))),
                timeout=30,
            )
            elapsed = time.monotonic() - started
        assert accepted == 400
        assert sum(n for _, n in acks) == 400
        # The first `burst` bytes pass at once, the rest at the rate: within 10 % of it.
        rate = (size - burst) / elapsed
        assert 0.9 * RATE <= rate <= 1.1 * RATE, (rate, acks)
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, key, sent=400, acknowledged=400, rejected={}, refused_calls={})
        samples = scrape(gateway.metrics_port)
        assert samples.get(("sluice_gateway_rate_limited_requests_total", (("access_key", key),)), 0) == 0
        delayed = samples[("sluice_gateway_rate_delayed_seconds_total", (("access_key", key),))]
        assert delayed >= 0.9 * (size - burst) / RATE
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert stored == envelopes  # each once, in order


async def test_sends_over_the_rate_retried_after_their_retry_after_get_the_rate(settings: Settings, unique: str) -> None:
    """Unary Sends are refused, uncharged, over the rate; a client waiting the retry-after it is
    told gets through each time, at the rate."""
    envelopes = lines(400)
    batches = [envelopes[i : i + 10] for i in range(0, 400, 10)]
    size = sum(e.ByteSize() for e in envelopes)
    burst = sum(e.ByteSize() for e in batches[0])
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}", limits=Limits(bytes_per_second=RATE, bytes_burst=burst))
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60),
                                retry=RetryPolicy(max_attempts=5, max_elapsed=10)) as client:
            started = time.monotonic()
            for batch in batches:
                assert await client.send(batch) == 10
            elapsed = time.monotonic() - started
        rate = (size - burst) / elapsed
        assert 0.9 * RATE <= rate <= 1.05 * RATE, rate
        assert gateway.metrics_port
        refused = scrape(gateway.metrics_port)[("sluice_gateway_rate_limited_requests_total", (("access_key", key),))]
        # At most about once per batch after the first: each wait was enough (fewer when the machine is
        # slow enough that a batch arrives after the bucket refilled; the rate above shows the limit held).
        assert 1 <= refused <= 80, refused
        await assert_accounted(gateway.metrics_port, key, sent=400 + 10 * int(refused), acknowledged=400,
                               rejected={"RESOURCE_EXHAUSTED": 10 * int(refused)})
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert stored == envelopes


async def test_sluice_send_completes_at_about_the_rate(settings: Settings, unique: str) -> None:
    """`sluice send --metrics N` against a key with a small byte rate: every envelope is
    acknowledged, in about the time the rate takes (issue #19: none were, in 58 s)."""
    count = 15_000
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}", limits=Limits(bytes_per_second=RATE))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        args = [sys.executable, "-m", "sluice.cli.main", "send", "--target", gateway.address, "--access-key", key,
                "--token", issue_token(settings.auth, key, 120), "--metrics", str(count)]
        started = time.monotonic()
        done = await asyncio.to_thread(subprocess.run, args, env=env, capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - started
        assert (done.returncode, done.stdout) == (0, f"acknowledged {count} of {count} envelopes\n"), done.stderr
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, key, sent=count, acknowledged=count, rejected={})
        charged = scrape(gateway.metrics_port)[
            ("sluice_gateway_received_bytes_total", (("access_key", key), ("entry_point", "BatchSender")))
        ]
    at_rate = (charged - RATE) / RATE  # the first second's worth is the burst
    assert at_rate > 3, charged
    # Not faster than the rate; no slower than it but for the process's start (a few seconds).
    assert 0.95 * at_rate <= elapsed <= 1.1 * at_rate + 4, (elapsed, at_rate)
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert len(stored) == count


async def test_a_stream_held_to_its_rate_is_published_within_its_linger(settings: Settings, unique: str) -> None:
    """Single envelopes (Sender) held to the rate never fall silent, yet are on the topic within
    stream_linger of being read, several to a record, each once and in order."""
    envelopes = [counter_envelope("n", i, timestamp=T, source_id="app") for i in range(300)]
    size = sum(e.ByteSize() for e in envelopes)
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}", limits=Limits(bytes_per_second=2000, bytes_burst=200))
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            started = time.monotonic()
            call = ingress_pb2_grpc.IngressStub(channel).Sender(singles(envelopes), metadata=metadata_for(settings, key))
            await asyncio.sleep(1.0)
            early = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
            assert not call.done()
            assert (await call).accepted == 300
            elapsed = time.monotonic() - started
    assert elapsed >= 0.95 * (size - 200) / 2000 > 3, (elapsed, size)
    assert 0 < len(early) < 300
    records = await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic)
    assert envelopes_of(records) == envelopes
    assert len(records) <= 300 / 5, len(records)
