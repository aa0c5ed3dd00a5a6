"""The decoding budget: reservations within it, waiting for room (bounded), refusing at once what
can never fit."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from sluice.ingress.decoding import DecodingBudget, DecodingBusy, TooLargeToDecode

MiB = 1 << 20


async def test_reservations_are_held_for_their_block_and_given_back() -> None:
    budget = DecodingBudget(100 * MiB, 1.0)
    async with budget.reserve(60 * MiB, "test") as held:
        assert budget.used == held.held == 60 * MiB
        await held.resize(10 * MiB)  # less is given back at once
        assert budget.used == 10 * MiB
        await held.resize(90 * MiB)
        assert budget.used == 90 * MiB
    assert budget.used == 0


async def test_a_request_costing_more_than_the_whole_budget_is_refused_at_once() -> None:
    budget = DecodingBudget(100 * MiB, 10.0)
    start = time.monotonic()
    with pytest.raises(TooLargeToDecode) as info:
        async with budget.reserve(101 * MiB, "OTLP.Metrics export"):
            pass
    assert time.monotonic() - start < 0.1
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.message == (
        "decoding this OTLP.Metrics export would take about 101.0 MiB, more than the gateway decodes at once "
        "(gateway.max_decoding_bytes = 100.0 MiB); send smaller requests"
    )
    assert budget.used == 0


async def test_a_reservation_waits_for_room_and_gets_it_when_another_ends() -> None:
    budget = DecodingBudget(100 * MiB, 5.0)
    order: list[str] = []

    async def first() -> None:
        async with budget.reserve(60 * MiB, "first"):
            order.append("first in")
            await asyncio.sleep(0.2)
            order.append("first out")

    async def second() -> None:
        await asyncio.sleep(0.05)
        async with budget.reserve(50 * MiB, "second"):
            order.append("second in")
            assert budget.used == 50 * MiB

    await asyncio.gather(first(), second())
    assert order == ["first in", "first out", "second in"]
    assert budget.used == 0


async def test_a_reservation_without_room_in_time_is_refused_busy_with_a_retry_after() -> None:
    budget = DecodingBudget(100 * MiB, 0.2)
    async with budget.reserve(60 * MiB, "first"):
        start = time.monotonic()
        with pytest.raises(DecodingBusy) as info:
            async with budget.reserve(50 * MiB, "RemoteWrite request"):
                pass
        assert 0.2 <= time.monotonic() - start < 0.4
        assert budget.used == 60 * MiB
    assert (info.value.code, info.value.retry_after) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 1.0)
    assert info.value.message == (
        "the gateway is decoding 60.0 MiB of other requests and this RemoteWrite request needs 50.0 MiB more of "
        "gateway.max_decoding_bytes (100.0 MiB); retry in 1s"
    )
    assert budget.used == 0


async def test_growing_past_the_budget_is_refused_and_releases_what_was_held() -> None:
    budget = DecodingBudget(100 * MiB, 1.0)
    with pytest.raises(TooLargeToDecode):
        async with budget.reserve(16 * MiB, "Influx.HTTP request") as held:
            await held.resize(200 * MiB)
    assert budget.used == 0

