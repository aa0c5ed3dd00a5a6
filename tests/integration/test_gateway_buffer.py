"""The gateway under pressure, through real gRPC and a real broker behind a fault proxy:
buffer policies with exact drop counts, byte-rate limits, stream linger, metrics, health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sluice.client import ClientError, SluiceClient, counter_envelope, log_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import Gateway, issue_token
from sluice.ingress.publisher import frame_records
from sluice.keys import Limits
from sluice.settings import Settings
from sluice.tansu import Tansu, free_port
from sluice.v1 import ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from tests.fixtures.proxy import FaultProxy
from tests.integration.gateway_helpers import (
    MetricSamples,
    add_key,
    assert_accounted,
    batch_of,
    envelopes_of,
    metadata_for,
    read_topic,
    scrape,
    singles,
)

T = (time.time_ns() // 10**9 - 60) * 10**9  # a minute ago: within every retention


def metric_values(gateway: Gateway) -> MetricSamples:
    assert gateway.metrics_port
    return scrape(gateway.metrics_port)


def ten(key: str, batch: int) -> list[Envelope]:
    """Ten envelopes whose encoding does not depend on when they are sent."""
    return [counter_envelope("n", batch * 10 + i, timestamp=T, source_id=key) for i in range(10)]


def chunk_bytes(key: str) -> int:
    (record,) = frame_records([e.SerializeToString() for e in ten(key, 0)], 1 << 20)
    return len(record) + len(key)


async def start_stalled_gateway(
    settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str, policy: str
) -> tuple[Gateway, str]:
    _, proxy = proxied_broker
    key = f"ak_{unique}"
    settings.kafka.bootstrap = f"127.0.0.1:{proxy.port}"
    settings.gateway.buffer_policy = policy  # type: ignore[assignment]
    settings.gateway.max_in_flight_chunks = 1
    settings.gateway.buffer_bytes = chunk_bytes(key) * 5 // 2  # two chunks fit, a third does not
    settings.gateway.block_timeout = 1.0
    gateway = Gateway(settings)
    await gateway.start()
    await add_key(gateway.keys, key)
    return gateway, key


@pytest.mark.parametrize(
    ("policy", "delivered"),
    [("drop-newest", [0, 1]), ("drop-oldest", [0, 5])],
)
async def test_lossy_policies_drop_exactly_what_they_count(
    settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str, policy: str, delivered: list[int]
) -> None:
    gateway, key = await start_stalled_gateway(settings, proxied_broker, unique, policy)
    try:
        proxied_broker[1].set_mode("stall")
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60)) as client:
            for batch in range(6):
                assert await client.send(ten(key, batch)) == 10  # lossy: answered once buffered
            assert gateway.publisher.diode.used <= settings.gateway.buffer_bytes
            dropped = metric_values(gateway)[
                ("sluice_gateway_dropped_envelopes_total",
                 (("access_key", key), ("policy", policy), ("reason", "buffer_full")))
            ]
            assert dropped == 40
            proxied_broker[1].set_mode("pass")
            assert gateway.metrics_port
            ledger = await assert_accounted(gateway.metrics_port, key, sent=60, acknowledged=60, rejected={})
            assert (ledger.acknowledged, ledger.dropped) == (20, 40)
    finally:
        await gateway.stop()
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert stored == [e for b in delivered for e in ten(key, b)]


async def test_block_pushes_back_then_delivers_everything_acknowledged(
    settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str
) -> None:
    gateway, key = await start_stalled_gateway(settings, proxied_broker, unique, "block")
    try:
        proxied_broker[1].set_mode("stall")
        token = issue_token(settings.auth, key, 60)
        async with SluiceClient(gateway.address, key, token, retry=RetryPolicy.never()) as client:
            first = asyncio.ensure_future(client.send(ten(key, 0)))  # in flight, waits for Kafka
            second = asyncio.ensure_future(client.send(ten(key, 1)))  # queued
            while gateway.publisher.diode.used < 2 * chunk_bytes(key):
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(ClientError) as info:
                await client.send(ten(key, 2))  # no room: waits block_timeout, then UNAVAILABLE
            assert 0.9 < time.monotonic() - started < 3
            assert (info.value.code, info.value.retriable, info.value.accepted) == (
                grpc.StatusCode.UNAVAILABLE, True, 0
            )
            assert info.value.details == (
                "the gateway's buffer stayed full for 1s (Kafka is slow or unavailable)"
            )
            assert not first.done() and not second.done()
            assert gateway.publisher.diode.used <= settings.gateway.buffer_bytes
            proxied_broker[1].set_mode("pass")
            assert await first == 10 and await second == 10
            assert gateway.metrics_port
            await assert_accounted(gateway.metrics_port, key, sent=30, acknowledged=20,
                                   rejected={"UNAVAILABLE": 10}, refused_calls={"UNAVAILABLE": 1})
    finally:
        await gateway.stop()
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    # The two calls raced to the gateway; each of their envelopes is stored exactly once.
    assert sorted(stored, key=lambda e: e.counter.delta) == ten(key, 0) + ten(key, 1)


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(settings) as gw:
        yield gw


async def test_byte_rate_limit_exceeded_and_recovered(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}", limits=Limits(bytes_per_second=1000, bytes_burst=1500))
    line = log_envelope(b"x" * 1100, timestamp=T, source_id="s")
    size = len(line.SerializeToString())
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ingress_pb2_grpc.IngressStub(channel)

        async def send() -> int:
            response = await stub.Send(EnvelopeBatch(batch=[line]), metadata=metadata_for(gateway.settings, key))
            return int(response.accepted)

        assert await send() == 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await send()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (info.value.details() or "").startswith(
            f"access key '{key}' is over its limit of 1000 bytes/s; retry in "
        )
        trailers = dict(info.value.trailing_metadata() or ())
        retry_after = float(trailers["retry-after"])
        assert 0 < retry_after <= (size - (1500 - size)) / 1000
        assert trailers["x-accepted"] == "0"
        await asyncio.sleep(retry_after)
        assert await send() == 1
    assert gateway.metrics_port
    await assert_accounted(gateway.metrics_port, key, sent=3, acknowledged=2,
                           rejected={"RESOURCE_EXHAUSTED": 1}, refused_calls={"RESOURCE_EXHAUSTED": 1})
    values = metric_values(gateway)
    assert values[("sluice_gateway_rate_limited_requests_total", (("access_key", key),))] == 1
    assert values[("sluice_gateway_acknowledged_envelopes_total", (("access_key", key),))] == 2
    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert envelopes_of(records) == [line, line]


async def test_a_quiet_stream_is_published_after_the_linger(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}")
    assert gateway.settings.gateway.stream_linger == 0.2
    seen = asyncio.Event()

    async def stream() -> AsyncIterator[Envelope]:
        for env in ten(key, 0)[:3]:
            yield env
        await seen.wait()  # the stream stays open until its first envelopes are on the topic
        yield ten(key, 0)[3]

    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = asyncio.ensure_future(
            ingress_pb2_grpc.IngressStub(channel).Sender(stream(), metadata=metadata_for(gateway.settings, key))
        )
        deadline = time.monotonic() + 5
        while not (records := await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)):
            assert time.monotonic() < deadline, "nothing was published while the stream was open"
            await asyncio.sleep(0.1)
        assert [len(batch_of(r)) for r in records] == [3]
        seen.set()
        assert (await call).accepted == 4


async def test_metrics_count_what_the_traffic_did(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}")
    await add_key(gateway.keys, f"ak_off_{unique}", enabled=False)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ingress_pb2_grpc.IngressStub(channel)
        await stub.Sender(singles(ten(key, 0)), metadata=metadata_for(gateway.settings, key))
        bad = Envelope(timestamp=-1, source_id="s")
        bad.log.payload = b"x"
        for metadata in (
            metadata_for(gateway.settings, key, token_key=f"ak_off_{unique}"),
            metadata_for(gateway.settings, f"ak_off_{unique}"),
        ):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Sender(singles([bad]), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Sender(singles([bad]), metadata=metadata_for(gateway.settings, key))
    assert gateway.metrics_port
    await assert_accounted(
        gateway.metrics_port, key, sent=11, acknowledged=10, rejected={"INVALID_ARGUMENT": 1},
        refused_calls={"UNAUTHENTICATED": 1, "PERMISSION_DENIED": 1, "INVALID_ARGUMENT": 1},
    )
    values = metric_values(gateway)
    size = sum(len(e.SerializeToString()) for e in ten(key, 0))
    labels = (("access_key", key), ("entry_point", "Sender"))
    assert values[("sluice_gateway_received_envelopes_total", labels)] == 11
    rejected = (("access_key", key), ("code", "INVALID_ARGUMENT"), ("entry_point", "Sender"))
    assert values[("sluice_gateway_rejected_envelopes_total", rejected)] == 1
    assert values[("sluice_gateway_received_bytes_total", labels)] == size
    assert values[("sluice_gateway_acknowledged_envelopes_total", (("access_key", key),))] == 10
    assert values[("sluice_gateway_invalid_requests_total", (("reason", "timestamp"),))] == 1
    assert values[("sluice_gateway_auth_failures_total", (("reason", "invalid_token"),))] == 1
    assert values[("sluice_gateway_auth_failures_total", (("reason", "permission_denied"),))] == 1
    assert values[("sluice_gateway_kafka_up", ())] == 1
    assert values[("sluice_gateway_kafka_publish_seconds_count", ())] == 1
    assert values[("sluice_gateway_record_bytes_count", ())] == 1


async def test_health_and_reflection(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("sluice.v1.Ingress", "sluice.v1.AgentConfig"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert {"sluice.v1.Ingress", "sluice.v1.AgentConfig", "grpc.health.v1.Health"} <= set(names)


async def test_spool_acknowledges_through_a_broker_outage_and_replays_exactly_once(
    settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str
) -> None:
    _, proxy = proxied_broker
    key = f"ak_{unique}"
    settings.kafka.bootstrap = f"127.0.0.1:{proxy.port}"
    settings.kafka.publish_timeout = 1.0
    settings.gateway.buffer_policy = "spool"
    async with Gateway(settings) as gateway:
        await add_key(gateway.keys, key)
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60)) as client:
            assert await client.send(ten(key, 0)) == 10  # Kafka is there
            assert metric_values(gateway).get(("sluice_gateway_spooled_envelopes_total", ())) == 0
            proxy.set_mode("partition")
            started = time.monotonic()
            for batch in range(1, 6):
                assert await client.send(ten(key, batch)) == 10  # acknowledged from the spool
            assert time.monotonic() - started < 10
            outage = metric_values(gateway)
            assert outage[("sluice_gateway_spooled_envelopes_total", ())] == 50
            assert outage[("sluice_gateway_spool_bytes", ())] > 0
            assert outage[("sluice_gateway_spool_oldest_age_seconds", ())] > 0
            assert outage[("sluice_gateway_kafka_up", ())] == 0
            proxy.set_mode("pass")
            assert gateway.publisher.spooler is not None
            deadline = time.monotonic() + 30
            while gateway.publisher.spooler.active or not gateway.publisher.spooler.spool.empty:
                assert time.monotonic() < deadline, "the spool was not replayed"
                await asyncio.sleep(0.1)
            assert await client.send(ten(key, 6)) == 10  # straight to Kafka again
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, key, sent=70, acknowledged=70, rejected={})
        after = metric_values(gateway)
        assert after[("sluice_gateway_replayed_envelopes_total", ())] == 50
        assert after[("sluice_gateway_acknowledged_envelopes_total", (("access_key", key),))] == 70
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert sorted(stored, key=lambda e: e.counter.delta) == [e for b in range(7) for e in ten(key, b)]
    assert list((settings.data_dir / "spool").glob("*.seg")) == []


async def test_a_stream_the_client_cancels_publishes_nothing_more(settings: Settings, unique: str) -> None:
    settings.gateway.stream_linger = 30  # nothing goes out on time while the stream is open
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}")
        sent = asyncio.Event()

        async def stream() -> AsyncIterator[Envelope]:
            for env in ten(key, 0)[:2]:
                yield env
            sent.set()
            await asyncio.sleep(30)

        async with grpc.aio.insecure_channel(gateway.address) as channel:
            call = ingress_pb2_grpc.IngressStub(channel).Sender(stream(), metadata=metadata_for(settings, key))
            await sent.wait()
            await asyncio.sleep(0.2)  # the gateway has read both envelopes
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        await asyncio.sleep(0.5)
        assert gateway.publisher.diode.used == 0
        values = metric_values(gateway)
        assert values[("sluice_gateway_received_envelopes_total", (("access_key", key), ("entry_point", "Sender")))] == 2
        assert ("sluice_gateway_acknowledged_envelopes_total", (("access_key", key),)) not in values
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, key, sent=2, acknowledged=0,
                               rejected={"CANCELLED": 2}, refused_calls={"CANCELLED": 1})
    assert await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic) == []
