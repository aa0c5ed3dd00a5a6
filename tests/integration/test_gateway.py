"""The gateway through real gRPC against the real broker (Tansu): what is published, and how.

Each test gets a gateway of its own on the test's fresh raw topic (from the ``settings``
fixture), whose records are then read back and compared exactly. Refused calls are in
test_gateway_refusals.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from sluice.client import (
    ClientError,
    RetryPolicy,
    SluiceClient,
    counter_envelope,
    event_envelope,
    gauge_envelope,
    log_envelope,
    timer_envelope,
)
from sluice.exceptions import ConfigurationError
from sluice.ingress import BindError, Gateway, issue_token, run_gateway
from sluice.records import CONTENT_TYPE_BATCH
from sluice.settings import Settings
from sluice.tansu import Tansu, free_port, wait_for_port
from sluice.v1 import ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope
from tests.integration.gateway_helpers import (
    add_key,
    assert_stored,
    batch_of,
    counters,
    envelopes_of,
    metadata_for,
    nan_gauge,
    read_topic,
    singles,
)

@pytest_asyncio.fixture
async def gateway(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    settings.gateway.stream_batch_envelopes = 1000  # small streams here still make several records
    # A stream's envelopes go out at most stream_linger after the oldest of them arrived, so on a
    # busy machine a linger may cut a record before it is full. Tests of the cut by count set a
    # linger that cannot (indirect parametrisation: the linger in seconds).
    settings.gateway.stream_linger = getattr(request, "param", settings.gateway.stream_linger)
    async with Gateway(settings) as gw:
        yield gw


@pytest_asyncio.fixture
async def key(gateway: Gateway, unique: str) -> str:
    return await add_key(gateway.keys, f"ak_{unique}")


@pytest_asyncio.fixture
async def client(gateway: Gateway, key: str) -> AsyncIterator[SluiceClient]:
    token = issue_token(gateway.settings.auth, key, 60)
    async with SluiceClient(gateway.address, key, token) as c:
        yield c


@pytest_asyncio.fixture
async def stub(gateway: Gateway) -> AsyncIterator[ingress_pb2_grpc.IngressStub]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield ingress_pb2_grpc.IngressStub(channel)


async def test_bound_port_is_exposed(gateway: Gateway) -> None:
    assert gateway.settings.gateway.listen == "127.0.0.1:0"
    assert gateway.port > 0
    assert gateway.address == f"127.0.0.1:{gateway.port}"


async def test_send_publishes_one_record_acknowledged_by_kafka(
    gateway: Gateway, client: SluiceClient, key: str
) -> None:
    earlier = time.time_ns() - 3600 * 10**9  # an hour ago: within every retention
    sent = [
        log_envelope("hello", tags={"level": "info"}),
        log_envelope(b"oops", error=True, source_id="web", instance_id="2", timestamp=earlier),
        counter_envelope("requests", 5, total=42),
        gauge_envelope({"cpu": (0.25, "ratio"), "rss": 1024.0}),
        timer_envelope("db.query", earlier - 1_500, earlier),
        event_envelope("deployed", "v1.2.3"),
    ]
    before = time.time_ns()
    assert await client.send(sent) == 6
    after = time.time_ns()

    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert len(records) == 1
    record = records[0]
    assert record.key == key.encode()
    headers = dict(record.headers)
    batch_id = headers.pop("batch-id")
    assert headers == {"content-type": CONTENT_TYPE_BATCH}
    assert len(batch_id) == 32 and int(batch_id, 16) >= 0
    stored = batch_of(record)
    assert_stored(stored, sent, key, before, after)
    stamped = stored[0].timestamp
    assert [e.source_id for e in stored] == [key, "web", key, key, key, key]
    assert [e.timestamp for e in stored] == [stamped, earlier, stamped, stamped, stamped, stamped]


@pytest.mark.parametrize("gateway", [30.0], indirect=True)
async def test_sender_stream_of_single_envelopes_becomes_three_records(
    gateway: Gateway, stub: ingress_pb2_grpc.IngressStub, key: str
) -> None:
    assert gateway.settings.gateway.stream_batch_envelopes == 1000
    sent = counters(2500)
    before = time.time_ns()
    response = await stub.Sender(singles(sent), metadata=metadata_for(gateway.settings, key))
    after = time.time_ns()
    assert response.accepted == 2500

    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert [len(batch_of(r)) for r in records] == [1000, 1000, 500]
    assert {r.key for r in records} == {key.encode()}
    assert len({dict(r.headers)["batch-id"] for r in records}) == 3
    assert_stored(envelopes_of(records), sent, key, before, after)


@pytest.mark.parametrize("gateway", [30.0], indirect=True)
async def test_batch_sender_stream_is_regrouped(gateway: Gateway, client: SluiceClient, key: str) -> None:
    sent = counters(1200)

    async def batches() -> AsyncIterator[list[Envelope]]:
        for i in range(0, 1200, 300):
            yield sent[i : i + 300]

    before = time.time_ns()
    assert await client.send_stream(batches()) == 1200
    after = time.time_ns()
    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert [len(batch_of(r)) for r in records] == [1000, 200]
    assert_stored(envelopes_of(records), sent, key, before, after)


async def test_large_send_is_split_by_record_size(settings: Settings, unique: str) -> None:
    settings.kafka.max_record_bytes = 4096
    settings.gateway.max_envelope_bytes = 2048
    now = time.time_ns()
    sent = [log_envelope(b"x" * 1000, source_id="app", timestamp=now + i) for i in range(10)]
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}")
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60)) as client:
            assert await client.send(sent) == 10
    records = await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic)
    assert [len(batch_of(r)) for r in records] == [4, 4, 2]
    assert all(len(r.value) <= 4096 for r in records)
    assert envelopes_of(records) == sent


@pytest.mark.parametrize("gateway", [30.0], indirect=True)
async def test_invalid_envelope_mid_stream_keeps_what_was_accepted(
    gateway: Gateway, stub: ingress_pb2_grpc.IngressStub, key: str
) -> None:
    sent = counters(1500) + [nan_gauge()] + counters(999, start=1500)
    before = time.time_ns()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Sender(singles(sent), metadata=metadata_for(gateway.settings, key))
    after = time.time_ns()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "envelope[1500].gauge.metrics['cpu'].value: NaN is not allowed"
    assert dict(info.value.trailing_metadata())["x-accepted"] == "1000"

    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert [len(batch_of(r)) for r in records] == [1000]
    assert_stored(envelopes_of(records), sent[:1000], key, before, after)


@pytest.mark.parametrize("gateway", [30.0], indirect=True)
async def test_oversized_batch_mid_stream(gateway: Gateway, client: SluiceClient) -> None:
    limit = gateway.settings.gateway.max_batch_envelopes
    with pytest.raises(ClientError) as info:
        await client.send_stream([counters(600), counters(600), counters(limit + 1)])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details == f"batch[2]: {limit + 1} envelopes exceed the limit of {limit} per batch"
    assert info.value.accepted == 1000
    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert [len(batch_of(r)) for r in records] == [1000]


async def test_in_flight_stream_finishes_during_graceful_stop(
    gateway: Gateway, stub: ingress_pb2_grpc.IngressStub, key: str
) -> None:
    resume = asyncio.Event()

    async def slow_stream() -> AsyncIterator[Envelope]:
        for env in counters(10):
            yield env
        await resume.wait()
        for env in counters(5, start=10):
            yield env

    call = asyncio.ensure_future(stub.Sender(slow_stream(), metadata=metadata_for(gateway.settings, key)))
    await asyncio.sleep(0.2)
    stopping = asyncio.ensure_future(gateway.stop(grace=10))
    await asyncio.sleep(0.2)
    assert not stopping.done()
    resume.set()
    assert (await call).accepted == 15
    await stopping
    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    # The first ten waited stream_linger while the stream was quiet, and went out on their own.
    assert [len(batch_of(r)) for r in records] == [10, 5]


async def test_kafka_not_acknowledging_is_unavailable(settings: Settings, unique: str, tmp_path: Path) -> None:
    broker = Tansu(log_path=tmp_path / "tansu.log").start()
    try:
        settings.kafka.bootstrap = broker.bootstrap
        settings.kafka.publish_timeout = 1.0
        async with Gateway(settings) as gateway:
            key = await add_key(gateway.keys, f"ak_{unique}")
            token = issue_token(settings.auth, key, 60)
            async with SluiceClient(gateway.address, key, token, retry=RetryPolicy.never()) as client:
                assert await client.send(counters(3)) == 3
                assert broker.proc is not None
                broker.proc.kill()  # a crash: no goodbye to the producer
                broker.proc.wait()
                started = time.monotonic()
                with pytest.raises(ClientError) as info:
                    await client.send(counters(2))
                assert time.monotonic() - started < 3
    finally:
        broker.stop()
    assert (info.value.code, info.value.accepted, info.value.retriable) == (
        grpc.StatusCode.UNAVAILABLE, 0, True
    )
    assert info.value.details == (
        f"Kafka did not acknowledge 1 record(s) on {settings.kafka.raw_topic!r} within 1s"
    )


# --- starting and stopping -----------------------------------------------------------------


def test_gateway_refuses_to_start_without_a_jwt_key(settings: Settings) -> None:
    settings.auth.jwt_secret = None
    with pytest.raises(ConfigurationError) as info:
        Gateway(settings)
    assert str(info.value) == (
        "no JWT key: auth.jwt_secret is not set but the allowed algorithms are ['HS256'] "
        "(hint: set SLUICE_AUTH_JWT_SECRET)"
    )


def test_gateway_refuses_a_malformed_listen_address(settings: Settings) -> None:
    settings.gateway.listen = "4317"
    with pytest.raises(ConfigurationError, match=r"^gateway.listen '4317' is not host:port"):
        Gateway(settings)


async def test_port_in_use_is_a_bind_error(gateway: Gateway, settings: Settings) -> None:
    settings.gateway.listen = gateway.address
    with pytest.raises(BindError) as info:
        await Gateway(settings).start()
    assert str(info.value) == (
        f"cannot listen on {gateway.address} (hint: is another process using that port?)"
    )


async def test_run_gateway_stops_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    settings.gateway.listen = f"127.0.0.1:{port}"
    task = asyncio.ensure_future(run_gateway(settings, grace=1))
    assert await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 10)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    assert not await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 0.2)
