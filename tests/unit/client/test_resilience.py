"""The client against a scripted fake gateway over real gRPC: retries, resent streams, watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from sluice.client import ClientError, RetryPolicy, SluiceClient, counter_envelope
from sluice.v1 import config_pb2
from sluice.v1.envelope_pb2 import Envelope
from tests.unit.client.fake_gateway import Failure, FakeGateway, start_fake
from tests.unit.client.test_retry import FakeTime

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[tuple[FakeGateway, str]]:
    server, gateway, address = await start_fake()
    yield gateway, address
    await server.stop(None)


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


def client(address: str, t: FakeTime, token: str = "good", **policy: float | None) -> SluiceClient:
    retry = RetryPolicy(sleep=t.sleep, clock=t.clock, random=lambda: 0.0, **policy)  # type: ignore[arg-type]
    return SluiceClient(address, "ak_test", token, retry=retry)


def envelopes(n: int, start: int = 0) -> list[Envelope]:
    return [counter_envelope("c", i) for i in range(start, start + n)]


def batches(n: int, size: int) -> list[list[Envelope]]:
    return [envelopes(size, start=i * size) for i in range(n)]


async def test_send_retries_unavailable_honouring_retry_after(fake: tuple[FakeGateway, str], time_: FakeTime) -> None:
    gateway, address = fake
    gateway.failures = [Failure(UNAVAILABLE, retry_after="0.25")] * 2 + [
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after="1.5")
    ]
    async with client(address, time_) as c:
        assert await c.send(envelopes(3)) == 3
    assert time_.sleeps == [0.25, 0.25, 1.5]
    assert (gateway.calls, gateway.stored) == (4, envelopes(3))


async def test_unauthenticated_fails_fast_with_a_hint(fake: tuple[FakeGateway, str], time_: FakeTime) -> None:
    gateway, address = fake
    async with client(address, time_, token="stale") as c:
        with pytest.raises(ClientError) as info:
            await c.send(envelopes(3))
        with pytest.raises(ClientError):
            await c.send_stream(batches(2, 5))
    assert str(info.value) == (
        "UNAUTHENTICATED: token expired (hint: the gateway refused the token; issue a new one for this "
        "access key with `sluice token issue --access-key KEY` and check the gateway's JWT key matches)"
    )
    assert isinstance(info.value.__cause__, grpc.aio.AioRpcError)
    assert (gateway.calls, gateway.stored, time_.sleeps) == (2, [], [])


async def test_send_gives_up_after_max_attempts(fake: tuple[FakeGateway, str], time_: FakeTime) -> None:
    gateway, address = fake
    gateway.failures = [Failure(UNAVAILABLE)] * 5
    async with client(address, time_, max_attempts=3) as c:
        with pytest.raises(ClientError) as info:
            await c.send(envelopes(1))
    assert (info.value.code, info.value.hint, gateway.calls, len(time_.sleeps)) == (
        UNAVAILABLE, "gave up after 3 attempts", 3, 2
    )


async def test_broken_stream_resends_only_what_was_not_acknowledged(
    fake: tuple[FakeGateway, str], time_: FakeTime
) -> None:
    gateway, address = fake
    # The first call stores 30 of the 35 it read, the second 20 of the 45 it read.
    gateway.failures = [Failure(after=35, store=30, retry_after="0.5"), Failure(after=45, store=20)]
    acks: list[int] = []
    async with client(address, time_) as c:
        assert await c.send_stream(batches(10, 10), on_ack=acks.append) == 100
    assert gateway.stored == envelopes(100)
    assert gateway.received == [40, 50, 50]  # a batch at a time: 40 read of which 30 stored...
    assert acks == [30, 20, 50]
    assert time_.sleeps == [0.5, 0.0]


async def test_what_a_call_failing_at_once_did_not_send_is_still_resent(
    fake: tuple[FakeGateway, str], time_: FakeTime
) -> None:
    gateway, address = fake
    gateway.failures = [Failure(after=35, store=30), Failure(after=0, tell=False), Failure(after=0)]
    async with client(address, time_) as c:
        assert await c.send_stream(batches(10, 10)) == 100
    assert gateway.stored == envelopes(100)
    assert gateway.received[-1] == 70


async def test_a_stream_broken_without_x_accepted_is_resent_whole(
    fake: tuple[FakeGateway, str], time_: FakeTime
) -> None:
    gateway, address = fake
    gateway.failures = [Failure(after=35, store=30, tell=False)]
    async with client(address, time_) as c:
        assert await c.send_stream(batches(10, 10)) == 100
    # at-least-once: what the gateway stored without saying so is stored again
    assert gateway.stored == envelopes(30) + envelopes(100)


async def test_streams_are_cut_to_bound_what_waits_for_an_acknowledgement(
    fake: tuple[FakeGateway, str], time_: FakeTime
) -> None:
    gateway, address = fake
    acks: list[int] = []
    async with client(address, time_) as c:
        assert await c.send_stream(batches(10, 10), max_stream_envelopes=25, on_ack=acks.append) == 100
    assert gateway.received == acks == [30, 30, 30, 10]
    assert gateway.stored == envelopes(100)


async def test_streams_are_cut_by_time_while_the_source_is_idle(fake: tuple[FakeGateway, str], time_: FakeTime) -> None:
    gateway, address = fake
    release = asyncio.Event()

    async def source() -> AsyncIterator[list[Envelope]]:
        yield envelopes(5)
        await release.wait()  # idle until the first five were acknowledged
        yield envelopes(5, start=5)

    def on_ack(n: int) -> None:
        release.set()

    async with client(address, time_) as c:
        assert await c.send_stream(source(), max_stream_seconds=0.05, on_ack=on_ack) == 10
    assert gateway.received == [5, 5] and gateway.stored == envelopes(10)


async def test_a_failing_source_raises_after_what_was_sent_is_acknowledged(
    fake: tuple[FakeGateway, str], time_: FakeTime
) -> None:
    gateway, address = fake

    async def source() -> AsyncIterator[list[Envelope]]:
        yield envelopes(5)
        raise OSError("disk gone")

    async with client(address, time_) as c:
        with pytest.raises(OSError, match="disk gone"):
            await c.send_stream(source())
    assert gateway.stored == envelopes(5)


async def test_non_retriable_mid_stream_error_counts_all_calls(fake: tuple[FakeGateway, str], time_: FakeTime) -> None:
    gateway, address = fake
    gateway.failures = [Failure(after=20, store=20), Failure(grpc.StatusCode.INVALID_ARGUMENT, after=30, store=10)]
    async with client(address, time_) as c:
        with pytest.raises(ClientError) as info:
            await c.send_stream(batches(10, 10))
    assert (info.value.code, info.value.accepted) == (grpc.StatusCode.INVALID_ARGUMENT, 30)
    assert gateway.stored == envelopes(30)


def config(version: int) -> config_pb2.AgentConfigResponse:
    return config_pb2.AgentConfigResponse(access_key="ak_test", enabled=True, version=version)


async def test_watch_config_reconnects_and_skips_repeats(fake: tuple[FakeGateway, str], time_: FakeTime) -> None:
    gateway, address = fake
    gateway.watches = [
        ([config(1), config(2)], Failure(UNAVAILABLE, retry_after="2")),
        ([], Failure(grpc.StatusCode.RESOURCE_EXHAUSTED)),
        ([config(2), config(3)], None),
    ]
    seen: list[int] = []
    async with client(address, time_) as c:
        async for response in c.watch_config():
            seen.append(response.version)
            if response.version == 3:
                break
    assert seen == [1, 2, 3]
    assert time_.sleeps == [2.0, 0.0]
    assert gateway.calls == 3


async def test_watch_config_refused_is_raised(fake: tuple[FakeGateway, str], time_: FakeTime) -> None:
    gateway, address = fake
    async with client(address, time_, token="stale") as c:
        with pytest.raises(ClientError) as info:
            async for _ in c.watch_config():
                pass
    assert (info.value.code, gateway.calls, time_.sleeps) == (grpc.StatusCode.UNAUTHENTICATED, 1, [])


async def test_a_stream_ended_early_by_the_server_keeps_its_status(fake: tuple[FakeGateway, str]) -> None:
    """grpc/grpc#36066: without sluice.client.grpc_patch some of these end as INTERNAL."""
    gateway, address = fake
    codes = []
    async with SluiceClient(address, "ak_test", "good", retry=RetryPolicy.never()) as c:
        for _ in range(200):
            gateway.failures = [Failure(after=20, store=10)]
            with pytest.raises(ClientError) as info:
                await c.send_stream(batches(50, 10))
            codes.append((info.value.code, info.value.accepted))
    assert codes == [(UNAVAILABLE, 10)] * 200


async def test_a_stream_refused_after_storing_some_each_time_never_gives_up(
    fake: tuple[FakeGateway, str], time_: FakeTime
) -> None:
    """Calls ended RESOURCE_EXHAUSTED (a quota) that each stored part of what they read are
    progress: more refusals than max_attempts still get everything through, after each
    retry-after."""
    gateway, address = fake
    exhausted = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, after=20, store=10, retry_after="1.5")
    gateway.failures = [exhausted] * 4
    acks: list[int] = []
    async with client(address, time_, max_attempts=2) as c:
        assert await c.send_stream(batches(10, 10), on_ack=acks.append) == 100
    assert gateway.stored == envelopes(100)
    assert acks == [10, 10, 10, 10, 60]
    assert time_.sleeps == [1.5] * 4
    gateway.failures = [Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, after=20, store=0, retry_after="1.5")] * 2
    async with client(address, time_, max_attempts=2) as c:
        with pytest.raises(ClientError, match="gave up after 2 attempts"):
            await c.send_stream(batches(10, 10))
