"""The gateway's connection limits through real gRPC against Tansu: message size, concurrent
calls, streams per connection, the deadline of every call, idle connections and ping abuse.

Each test starts a gateway with the limit under test set low, and asserts the exact status a
client gets and that nothing of a refused call was published.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from sluice.client import log_envelope
from sluice.ingress import Gateway
from sluice.settings import Settings
from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from tests.integration.gateway_helpers import (
    CallMetadata,
    add_key,
    assert_accounted,
    counters,
    envelopes_of,
    metadata_for,
    read_topic,
)

KEY = "ak_limits"


async def started(settings: Settings, **gateway: object) -> Gateway:
    for name, value in gateway.items():
        setattr(settings.gateway, name, value)
    gw = Gateway(settings)
    await gw.start()
    await add_key(gw.keys, KEY)
    return gw


async def published(gateway: Gateway) -> int:
    kafka = gateway.settings.kafka
    return len(envelopes_of(await read_topic(kafka.bootstrap, kafka.raw_topic)))


class HeldStream:
    """A ``Sender`` call that sends ``envelopes`` and then waits for :meth:`release`."""

    def __init__(self, channel: grpc.aio.Channel, metadata: CallMetadata, envelopes: list[Envelope]) -> None:
        self._release = asyncio.Event()
        self.sent = asyncio.Event()

        async def requests() -> AsyncIterator[Envelope]:
            for envelope in envelopes:
                yield envelope
            self.sent.set()
            await self._release.wait()

        self.call = ingress_pb2_grpc.IngressStub(channel).Sender(requests(), metadata=metadata)

    def release(self) -> None:
        self._release.set()


async def get_config(channel: grpc.aio.Channel, metadata: CallMetadata, timeout: float = 10) -> str:
    config = config_pb2_grpc.AgentConfigStub(channel)
    response = await config.GetConfig(config_pb2.GetConfigRequest(), metadata=metadata, timeout=timeout)
    return str(response.access_key)


async def wait_for_state(channel: grpc.aio.Channel, wanted: grpc.ChannelConnectivity, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = channel.get_state()
    while state != wanted:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the channel stayed {state}, expected {wanted}"
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            pass
        state = channel.get_state()


async def test_message_over_the_size_limit(settings: Settings) -> None:
    gateway = await started(settings, max_message_bytes=64 * 1024)
    try:
        batch = EnvelopeBatch(batch=[log_envelope("x" * 100) for _ in range(1000)])
        size = batch.ByteSize()
        assert size > 64 * 1024
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = ingress_pb2_grpc.IngressStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Send(batch, metadata=metadata_for(settings, KEY), timeout=10)
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"SERVER: Received message larger than max ({size} vs. 65536)"
            )
            small = EnvelopeBatch(batch=counters(5))
            assert (await stub.Send(small, metadata=metadata_for(settings, KEY), timeout=10)).accepted == 5
        assert await published(gateway) == 5
    finally:
        await gateway.stop()


async def test_concurrent_rpc_limit(settings: Settings) -> None:
    gateway = await started(settings, max_concurrent_rpcs=1)
    metadata = metadata_for(settings, KEY)
    try:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            held = HeldStream(channel, metadata, counters(3))
            await held.sent.wait()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await get_config(channel, metadata)
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"
            )
            held.release()
            assert (await held.call).accepted == 3
            assert await get_config(channel, metadata) == KEY
        assert await published(gateway) == 3
    finally:
        await gateway.stop()


async def test_streams_per_connection(settings: Settings) -> None:
    """Over the limit a call waits for a free stream on its connection; other connections serve."""
    gateway = await started(settings, max_concurrent_streams=1)
    metadata = metadata_for(settings, KEY)
    try:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            held = HeldStream(channel, metadata, counters(2))
            await held.sent.wait()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await get_config(channel, metadata, timeout=1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            own = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(gateway.address, options=own) as other:
                assert await get_config(other, metadata) == KEY
            held.release()
            assert (await held.call).accepted == 2
            assert await get_config(channel, metadata) == KEY
    finally:
        await gateway.stop()


async def test_streaming_call_deadline(settings: Settings) -> None:
    # No timed flush before the deadline: what the stream sent so far is still pending.
    gateway = await started(settings, stream_timeout=0.5, stream_linger=30)
    try:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            held = HeldStream(channel, metadata_for(settings, KEY), counters(2))
            started_at = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await held.call
            elapsed = time.monotonic() - started_at
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.DEADLINE_EXCEEDED, "the call exceeded the gateway's limit of 0.5s"
            )
            assert 0.5 <= elapsed < 3, elapsed
            held.release()
        assert await published(gateway) == 0
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, KEY, sent=2, acknowledged=0,
                               rejected={"DEADLINE_EXCEEDED": 2}, refused_calls={"DEADLINE_EXCEEDED": 1})
    finally:
        await gateway.stop()


async def test_idle_connection_is_closed(settings: Settings) -> None:
    gateway = await started(settings, max_connection_idle=0.3)
    try:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            assert await get_config(channel, metadata_for(settings, KEY)) == KEY
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            await wait_for_state(channel, grpc.ChannelConnectivity.IDLE, timeout=5)
            assert await get_config(channel, metadata_for(settings, KEY)) == KEY  # reconnects
    finally:
        await gateway.stop()


async def test_ping_flood_is_cut_off(settings: Settings) -> None:
    """A client pinging far more often than allowed gets GOAWAY too_many_pings: its call fails."""
    gateway = await started(settings, min_client_ping_interval=10, max_ping_strikes=1)
    flood = [
        ("grpc.keepalive_time_ms", 20),
        ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    try:
        async with grpc.aio.insecure_channel(gateway.address, options=flood) as channel:
            held = HeldStream(channel, metadata_for(settings, KEY), counters(2))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(held.call, 20)  # the client pings about once a second
            assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAVAILABLE, "Too many pings")
            held.release()
    finally:
        await gateway.stop()
