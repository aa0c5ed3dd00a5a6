"""Tenants are isolated: a token writes only as its own key, and a key flooding the gateway is
held to its byte rate while another key's calls go through."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from sluice.client import ClientError, SluiceClient, log_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import Gateway, issue_token
from sluice.keys import Limits
from sluice.settings import Settings
from tests.integration.gateway_helpers import add_key, envelopes_of, read_topic


async def test_a_flooding_tenant_does_not_starve_another(settings: Settings, unique: str) -> None:
    async with Gateway(settings) as gateway:
        flood = await add_key(gateway.keys, f"ak_flood_{unique}", limits=Limits(bytes_per_second=20_000))
        calm = await add_key(gateway.keys, f"ak_calm_{unique}", limits=Limits(bytes_per_second=20_000))
        line = log_envelope(b"x" * 900, timestamp=time.time_ns(), source_id="s")
        refused = accepted_flood = 0
        stop = asyncio.Event()

        async def flooding(worker: int) -> None:
            nonlocal refused, accepted_flood
            async with SluiceClient(gateway.address, flood, issue_token(settings.auth, flood, 60),
                                    retry=RetryPolicy.never()) as client:
                while not stop.is_set():
                    try:
                        n = await client.send([line] * 10)  # not `+= await`: four tasks add here
                        accepted_flood += n
                    except ClientError as exc:
                        assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                        refused += 1

        floods = [asyncio.ensure_future(flooding(i)) for i in range(4)]
        latencies = []
        started = time.monotonic()
        async with SluiceClient(gateway.address, calm, issue_token(settings.auth, calm, 60),
                                retry=RetryPolicy.never()) as client:
            for _ in range(6):  # 2 calls/s of 4.5 KB: well within its own 20 KB/s
                t = time.monotonic()
                assert await client.send([line] * 5) == 5
                latencies.append(time.monotonic() - t)
                await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.gather(*floods)
    assert refused > 100  # the flood was held back ...
    # ... to its rate (plus one burst), while the calm tenant was never refused
    assert accepted_flood * len(line.SerializeToString()) <= 20_000 * (elapsed + 1) + 10_000
    assert max(latencies) < 1.0, latencies
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert len(stored) == accepted_flood + 30


async def test_a_token_writes_only_as_its_own_key(settings: Settings, unique: str) -> None:
    async with Gateway(settings) as gateway:
        a = await add_key(gateway.keys, f"ak_a_{unique}")
        b = await add_key(gateway.keys, f"ak_b_{unique}")
        async with SluiceClient(gateway.address, b, issue_token(settings.auth, a, 60),
                                retry=RetryPolicy.never()) as client:
            with pytest.raises(ClientError) as info:
                await client.send([log_envelope("as b with a's token")])
        assert (info.value.code, info.value.details) == (
            grpc.StatusCode.UNAUTHENTICATED, f"token subject '{a}' does not match x-access-key '{b}'"
        )
    assert await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic) == []
