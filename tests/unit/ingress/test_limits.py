"""The byte-rate limiter and the per-key quotas on their own, on a fake clock."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from sluice.ingress.exceptions import RateLimited
from sluice.ingress.limits import ByteRateLimiter
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.quotas import KeyQuotas, QuotaExceeded
from sluice.keys import AccessKeyConfig, Limits
from sluice.settings import GatewaySettings


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limiter(time: FakeTime, metrics: GatewayMetrics | None = None) -> ByteRateLimiter:
    return ByteRateLimiter(metrics, clock=time.clock, sleep=time.sleep)


def config(rate: int, burst: int = 0) -> AccessKeyConfig:
    return AccessKeyConfig(access_key="ak_1", limits=Limits(bytes_per_second=rate, bytes_burst=burst))


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_reservations_queue_behind_each_other() -> None:
    time = FakeTime()
    rate = limiter(time)
    limits = Limits(bytes_per_second=100, bytes_burst=100)
    assert rate.reserve("k", 250, limits) == 0.0  # larger than the burst: passes on a full bucket
    assert rate.reserve("k", 50, limits) == pytest.approx(2.0)  # behind the 150-byte debt
    assert rate.reserve("k", 50, limits) == pytest.approx(2.5)
    assert rate.take("k", 10, limits) == pytest.approx(2.6)  # a refusal takes nothing ...
    assert rate.take("k", 10, limits) == pytest.approx(2.6)  # ... so the same wait again
    assert rate.reserve("other", 100, limits) == 0.0  # buckets are per key


def test_a_refused_request_passes_after_its_retry_after() -> None:
    time = FakeTime()
    rate = limiter(time)
    limits = Limits(bytes_per_second=1000, bytes_burst=1500)
    assert rate.take("k", 1200, limits) == 0.0
    wait = rate.take("k", 1200, limits)
    assert wait == pytest.approx(0.9)  # 300 left, 1200 needed
    time.now += wait
    assert rate.take("k", 1200, limits) == 0.0


def test_refunds_give_back_what_was_not_stored_up_to_the_burst() -> None:
    time = FakeTime()
    rate = limiter(time)
    limits = Limits(bytes_per_second=100, bytes_burst=200)
    assert rate.reserve("k", 200, limits) == 0.0
    rate.refund("k", 150, limits)
    assert rate.take("k", 150, limits) == 0.0
    rate.refund("k", 10_000, limits)
    assert rate.take("k", 200, limits) == 0.0  # refilled to the burst, not beyond
    assert rate.take("k", 1, limits) == pytest.approx(0.01)
    rate.refund("never-seen", 100, limits)  # nothing to give back to


def test_admit_refuses_uncharged_with_the_wait_and_counts() -> None:
    time = FakeTime()
    metrics = GatewayMetrics()
    rate = limiter(time, metrics)
    rate.admit(config(1000), 800)
    with pytest.raises(RateLimited) as info:
        rate.admit(config(1000), 800)
    assert str(info.value) == "access key 'ak_1' is over its limit of 1000 bytes/s; retry in 0.60s"
    assert info.value.retry_after == pytest.approx(0.6)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sample(metrics, "sluice_gateway_rate_limited_requests_total", access_key="ak_1") == 1
    time.now += 0.6
    rate.admit(config(1000), 800)
    rate.admit(config(0), 10**9)  # no limit


async def test_a_stream_offered_three_times_its_rate_gets_exactly_the_rate() -> None:
    time = FakeTime()
    metrics = GatewayMetrics()
    rate = limiter(time, metrics)
    key = config(100_000, burst=10_000)
    for _ in range(300):  # 300 batches of 10 kB: 3 MB, offered as fast as they are read
        await rate.pace(key, 10_000)
    assert time.now == pytest.approx((3_000_000 - 10_000) / 100_000)
    assert sample(metrics, "sluice_gateway_rate_delayed_seconds_total", access_key="ak_1") == pytest.approx(time.now)


async def test_pace_runs_before_wait_only_when_it_waits_and_refunds_a_cancelled_wait() -> None:
    time = FakeTime()
    rate = limiter(time)
    key = config(100)
    calls: list[float] = []

    async def before(wait: float) -> None:
        calls.append(wait)

    assert await rate.pace(key, 100, before_wait=before) == 0.0
    assert calls == []
    assert await rate.pace(key, 50, before_wait=before) == pytest.approx(0.5)
    assert calls == [pytest.approx(0.5)]

    async def cancelled(seconds: float) -> None:
        raise asyncio.CancelledError

    blocked = ByteRateLimiter(clock=time.clock, sleep=cancelled)
    assert blocked.reserve("ak_1", 100, key.limits) == 0.0
    with pytest.raises(asyncio.CancelledError):
        await blocked.pace(key, 100)
    assert blocked.take("ak_1", 1, key.limits) == pytest.approx(0.01)  # the 100 bytes came back


def test_quotas_count_calls_and_streams_per_key() -> None:
    metrics = GatewayMetrics()
    quotas = KeyQuotas(GatewaySettings(max_calls_per_key=3, max_streams_per_key=2), metrics)
    streams = [quotas.open("a", streaming=True) for _ in range(2)]
    with pytest.raises(QuotaExceeded) as info:
        quotas.open("a", streaming=True)
    assert (str(info.value), info.value.quota, info.value.retry_after) == (
        "access key 'a' has 2 streams open, its quota (gateway.max_streams_per_key); retry in 1s", "streams", 1.0
    )
    unary = quotas.open("a", streaming=False)
    with pytest.raises(QuotaExceeded, match=r"^access key 'a' has 3 calls open, its quota \(gateway.max_calls_per_key\)"):
        quotas.open("a", streaming=False)
    with quotas.open("b", streaming=True):  # another key is not affected
        assert quotas.open_calls("b") == (1, 1)
    assert quotas.open_calls("b") == (0, 0)
    unary.release()
    unary.release()  # once only
    assert quotas.open_calls("a") == (2, 2)
    streams[0].release()
    quotas.open("a", streaming=True).release()
    assert sample(metrics, "sluice_gateway_quota_refused_calls_total", access_key="a", quota="streams") == 1
    assert sample(metrics, "sluice_gateway_quota_refused_calls_total", access_key="a", quota="calls") == 1
