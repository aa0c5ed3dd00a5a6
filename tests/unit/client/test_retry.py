"""The retry policy on its own: jitter bounds, retry-after, limits, constructor checks."""

from __future__ import annotations

import random

import grpc
import pytest

from sluice.client import ClientError, RetryPolicy


class FakeTime:
    """A clock that only moves when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def unavailable(retry_after: float | None = None) -> ClientError:
    return ClientError(grpc.StatusCode.UNAVAILABLE, "down", retry_after=retry_after)


def test_full_jitter_stays_within_the_exponential_ceiling_and_the_cap() -> None:
    rng = random.Random(7)
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=2.0, multiplier=2.0, random=rng.random)
    for retry in range(12):
        ceiling = min(2.0, 0.1 * 2**retry)
        draws = [policy.backoff(retry) for _ in range(500)]
        assert all(0 <= d < ceiling for d in draws)
        # full jitter: the draws spread over the whole range, not just near the ceiling
        assert min(draws) < ceiling * 0.05 and max(draws) > ceiling * 0.95
    assert RetryPolicy(random=lambda: 0.5).backoff(10_000) == 5.0  # capped, no overflow


async def test_retry_after_is_a_floor_and_backoff_applies_above_it() -> None:
    t = FakeTime()
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, random=lambda: 0.5, sleep=t.sleep, clock=t.clock)
    retrying = policy.start()
    await retrying.failed(unavailable(retry_after=3.0))  # backoff 0.5 < 3
    await retrying.failed(unavailable(retry_after=0.25))  # backoff 1.0 > 0.25
    await retrying.failed(unavailable())  # backoff 2.0
    assert t.sleeps == [3.0, 1.0, 2.0]


async def test_gives_up_after_max_attempts_with_a_hint() -> None:
    t = FakeTime()
    retrying = RetryPolicy(max_attempts=3, random=lambda: 0.0, sleep=t.sleep, clock=t.clock).start()
    await retrying.failed(unavailable())
    await retrying.failed(unavailable())
    with pytest.raises(ClientError) as info:
        await retrying.failed(unavailable())
    assert str(info.value) == "UNAVAILABLE: down (hint: gave up after 3 attempts)"
    assert t.sleeps == [0.0, 0.0]


async def test_gives_up_when_the_next_wait_would_pass_max_elapsed() -> None:
    t = FakeTime()
    retrying = RetryPolicy(max_attempts=None, max_elapsed=10.0, sleep=t.sleep, clock=t.clock).start()
    await retrying.failed(unavailable(retry_after=4.0))
    await retrying.failed(unavailable(retry_after=4.0))
    with pytest.raises(ClientError) as info:
        await retrying.failed(unavailable(retry_after=4.0))  # 8 + 4 > 10
    assert info.value.hint == "gave up after 3 attempt(s) in 8.0s"
    assert t.sleeps == [4.0, 4.0]


async def test_progress_starts_the_count_afresh() -> None:
    t = FakeTime()
    retrying = RetryPolicy(max_attempts=2, random=lambda: 0.5, initial_backoff=1.0, sleep=t.sleep, clock=t.clock).start()
    for _ in range(3):
        await retrying.failed(unavailable())
        retrying.progressed()
    assert t.sleeps == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "the gateway refused the token; issue a new one"),
        (grpc.StatusCode.PERMISSION_DENIED, "the gateway refused this access key; check it exists"),
        (grpc.StatusCode.INVALID_ARGUMENT, None),
    ],
)
async def test_refusals_are_raised_at_once(code: grpc.StatusCode, hint: str | None) -> None:
    t = FakeTime()
    error = ClientError(code, "no")
    with pytest.raises(ClientError) as info:
        await RetryPolicy(sleep=t.sleep, clock=t.clock).start().failed(error)
    assert info.value is error and t.sleeps == []
    assert (error.hint or "").startswith(hint or "")
    assert (error.hint is None) == (hint is None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1 or None, got 0"),
        ({"max_elapsed": -1}, "max_elapsed must be >= 0 or None, got -1"),
        ({"initial_backoff": 0}, "initial_backoff must be > 0, got 0"),
        ({"max_backoff": 0.05}, "max_backoff must be >= initial_backoff (0.1), got 0.05"),
        ({"multiplier": 0.5}, "multiplier must be >= 1, got 0.5"),
    ],
)
def test_constructor_checks(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
