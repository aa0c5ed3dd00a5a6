"""Gap detection against a fake consumer: seeks back where records skip ahead or never arrive."""

from __future__ import annotations

import asyncio

from faust.types import TP

from sluice.streams.continuity import Continuity
from sluice.streams.pipeline import Record
from sluice.streams.positions import Positions


class FakeConsumer:
    def __init__(self, fetched: dict[int, int], earliest: int = 0) -> None:
        self.fetched = fetched
        self.earliest = earliest
        self.seeks: list[tuple[int, int]] = []
        self.asked: list[int] = []  # the partitions whose earliest offset was asked for

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        self.asked += [tp.partition for tp in tps]
        return {tp: self.earliest for tp in tps}

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    async def position(self, tp: TP) -> int | None:
        return self.fetched.get(tp.partition)


def rec(partition: int, offset: int) -> Record:
    return Record("raw", partition, offset, b"k", b"")


def continuity(consumer: FakeConsumer, positions: Positions, busy: bool = False) -> Continuity:
    return Continuity(lambda: consumer, "raw", positions, busy=lambda: busy, stall=0.01)


async def test_records_that_skip_ahead_are_dropped_and_read_again() -> None:
    positions = Positions()
    positions.advance(0, 4)
    consumer = FakeConsumer({}, earliest=3)
    c = continuity(consumer, positions)
    kept = await c.admit([rec(0, 4), rec(0, 5), rec(0, 9), rec(1, 3), rec(1, 4), rec(1, 6)])
    assert [(r.partition, r.offset) for r in kept] == [(0, 5), (1, 3), (1, 4)]
    assert consumer.seeks == [(0, 6), (1, 5)]
    assert (c.seeks, c.skipped) == (2, 1)
    assert consumer.asked == [1]  # partition 0 has a position


async def test_a_partition_that_starts_at_offset_0_needs_no_earliest_offset() -> None:
    consumer = FakeConsumer({}, earliest=2)  # as if the broker said 2: it is not asked
    c = continuity(consumer, Positions())
    kept = await c.admit([rec(0, 0), rec(0, 1), rec(1, 2), rec(1, 3), rec(1, 5)])
    assert [(r.partition, r.offset) for r in kept] == [(0, 0), (0, 1), (1, 2), (1, 3)]
    assert (consumer.asked, consumer.seeks) == ([1], [(1, 4)])


async def test_fetched_records_that_never_arrive_are_read_again_when_idle() -> None:
    positions = Positions()
    positions.advance(0, 9)
    consumer = FakeConsumer({0: 20, 1: 0})
    busy = continuity(consumer, positions, busy=True)
    await asyncio.sleep(0.02)
    await busy.watch([0, 1])
    assert consumer.seeks == []  # a running job explains a lag
    idle = continuity(consumer, positions)
    await idle.watch([0, 1])
    assert consumer.seeks == []  # not quiet for long enough yet
    await asyncio.sleep(0.02)
    await idle.watch([0, 1])
    assert consumer.seeks == [(0, 10)]  # partition 1 fetched nothing beyond its start
    await idle.watch([0, 1])
    assert consumer.seeks == [(0, 10)]  # the seek restarted the quiet period
