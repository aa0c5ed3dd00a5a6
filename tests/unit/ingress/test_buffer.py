"""The diode and the byte-rate limiter on their own."""

from __future__ import annotations

import asyncio

import pytest

from sluice.ingress.buffer import Chunk, Diode
from sluice.ingress.exceptions import BufferFull
from sluice.ingress.limits import ByteRateLimiter
from sluice.ingress.quotas import QuotaExceeded
from sluice.keys import Limits


def chunk(n: int, size: int = 100) -> Chunk:
    return Chunk(b"k", [bytes([n]) * (size - 1)], envelopes=1)


def diode(policy: str, capacity: int = 300, dropped: list[tuple[int, str]] | None = None) -> Diode:
    sink = dropped if dropped is not None else []
    return Diode(
        capacity, policy, block_timeout=0.05,  # type: ignore[arg-type]
        on_drop=lambda c, reason: sink.append((c.records[0][0], reason)),
    )


async def test_drop_newest_keeps_the_first_chunks() -> None:
    dropped: list[tuple[int, str]] = []
    d = diode("drop-newest", dropped=dropped)
    assert [await d.put(chunk(i)) for i in range(5)] == [True, True, True, False, False]
    assert dropped == [(3, "buffer_full"), (4, "buffer_full")]
    assert [(await d.get()).records[0][0] for _ in range(3)] == [0, 1, 2]


async def test_drop_oldest_keeps_the_last_queued_chunks_but_not_those_in_flight() -> None:
    dropped: list[tuple[int, str]] = []
    d = diode("drop-oldest", dropped=dropped)
    for i in range(3):
        await d.put(chunk(i))
    first = await d.get()  # in flight: its room is taken until released
    assert await d.put(chunk(3))
    assert await d.put(chunk(4))
    assert dropped == [(1, "buffer_full"), (2, "buffer_full")]
    assert d.used == 300 and d.depth == 2
    await d.release(first)
    assert d.used == 200


async def test_block_waits_for_room_then_gives_up() -> None:
    d = diode("block")
    for i in range(3):
        await d.put(chunk(i))
    with pytest.raises(BufferFull, match=r"^the gateway's buffer stayed full for 0.05s"):
        await d.put(chunk(3))
    taken = await d.get()
    waiting = asyncio.ensure_future(d.put(chunk(4)))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await d.release(taken)
    assert await waiting
    assert d.used == 300


async def test_a_chunk_larger_than_the_buffer_goes_alone() -> None:
    d = diode("drop-newest")
    assert await d.put(chunk(0, size=1000))
    assert not await d.put(chunk(1))


def test_diode_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown buffer policy 'lossy'"):
        Diode(10, "lossy", block_timeout=1, on_drop=lambda c, r: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity_bytes must be >= 1"):
        Diode(0, "block", block_timeout=1, on_drop=lambda c, r: None)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = ByteRateLimiter(clock=lambda: now[0])
    limits = Limits(bytes_per_second=100, bytes_burst=300)
    assert limiter.take("k", 250, limits) == 0.0
    assert limiter.take("k", 100, limits) == pytest.approx(0.5)  # 50 left, 100 needed
    now[0] = 0.5
    assert limiter.take("k", 100, limits) == 0.0
    assert limiter.take("other", 300, limits) == 0.0  # buckets are per key
    assert limiter.take("k", 10, Limits()) == 0.0  # no limit


def test_a_request_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_a_debt() -> None:
    now = [0.0]
    limiter = ByteRateLimiter(clock=lambda: now[0])
    limits = Limits(bytes_per_second=100)
    assert limiter.take("k", 500, limits) == 0.0
    assert limiter.take("k", 1, limits) == pytest.approx(4.01)


def keyed(key: str, n: int, size: int = 100) -> Chunk:
    record = bytes([n]) * (size - len(key))
    return Chunk(key.encode(), [record], envelopes=1)


def shared(policy: str, capacity: int = 1000, key_capacity: int = 200) -> Diode:
    return Diode(capacity, policy, block_timeout=0.05, on_drop=lambda c, r: None,  # type: ignore[arg-type]
                 key_capacity=key_capacity)


async def test_block_waits_for_the_keys_share_then_refuses_it_while_other_keys_get_in() -> None:
    d = shared("block")
    assert await d.put(keyed("a", 0)) and await d.put(keyed("a:1", 1))  # a shard's record key counts as its key
    assert d.held("a") == 200
    with pytest.raises(QuotaExceeded) as info:
        await d.put(keyed("a", 2))
    assert str(info.value) == (
        "access key 'a' holds 200 bytes in the gateway's buffer, at its quota of 200 "
        "(gateway.max_buffer_bytes_per_key); retry in 1s"
    )
    assert info.value.quota == "buffer"
    assert await d.put(keyed("b", 0))
    assert (d.used, d.held("b")) == (300, 100)
    taken = await d.get()
    waiting = asyncio.ensure_future(d.put(keyed("a", 3)))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await d.release(taken)
    assert await waiting
    assert d.held("a") == 200


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest"])
async def test_lossy_policies_refuse_a_key_over_its_share_and_drop_nothing(policy: str) -> None:
    dropped: list[str] = []
    d = Diode(1000, policy, block_timeout=0.05, key_capacity=200,  # type: ignore[arg-type]
              on_drop=lambda c, reason: dropped.append(reason))
    for n in range(2):
        assert await d.put(keyed("a", n))
    with pytest.raises(QuotaExceeded):
        await d.put(keyed("a", 2))
    assert (dropped, d.depth, d.held("a")) == ([], 2, 200)


async def test_a_chunk_larger_than_a_keys_share_goes_alone_and_try_put_respects_the_share() -> None:
    d = shared("spool")
    assert await d.try_put(keyed("a", 0, size=500))
    assert not await d.try_put(keyed("a", 1))  # the spool policy spools it instead
    assert await d.try_put(keyed("b", 0))
    await d.release(await d.get())
    assert d.held("a") == 0 and d.held("b") == 100
