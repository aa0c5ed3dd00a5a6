"""Keeps the records of each raw partition contiguous, whatever the consumer does.

Measured on Tansu with Faust 0.11: after a worker restarts, records fetched while Faust is
still recovering its tables are discarded (flow control is off) but the fetch position has
moved past them. Some partitions then resume further on, others never see another record.
Offsets of the raw topic are contiguous, so both are visible against the durable positions:

- :meth:`admit` drops records that skip ahead of their partition's position and seeks back;
- :meth:`watch` seeks back a partition whose fetch position is ahead of its durable position
  while no record has arrived for ``stall`` seconds and the pipeline is idle.

Records at or below a position are durable already and are dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP

from sluice.streams.pipeline import Record
from sluice.streams.positions import Positions

log = logging.getLogger(__name__)


class Continuity:
    """Gap detection for one topic; ``consumer()`` gives the Faust consumer."""

    def __init__(
        self,
        consumer: Callable[[], Any],
        topic: str,
        positions: Positions,
        *,
        busy: Callable[[], bool],
        stall: float = 3.0,
    ) -> None:
        if stall <= 0:
            raise ValueError(f"stall must be > 0, got {stall}")
        self._consumer = consumer
        self.topic = topic
        self.positions = positions
        self._busy = busy
        self._stall = stall
        self._last_records = time.monotonic()
        self.seeks = 0
        self.skipped = 0  # records read again that were durable already

    def touch(self) -> None:
        """Note that the stream is live now (the watch waits ``stall`` seconds from here)."""
        self._last_records = time.monotonic()

    async def _earliest(self, partitions: Iterable[int]) -> dict[int, int]:
        tps = [TP(self.topic, p) for p in partitions if self.positions.get(p) < 0]
        if not tps:
            return {}
        return {tp.partition: o for tp, o in (await self._consumer().earliest_offsets(*tps)).items()}

    async def _seek(self, partition: int, offset: int, why: str) -> None:
        self.seeks += 1
        log.warning("records of %s/%d %s: reading again from offset %d", self.topic, partition, why, offset)
        await self._consumer().seek(TP(self.topic, partition), offset)

    async def admit(self, records: list[Record]) -> list[Record]:
        """The records that continue their partitions; seeks back where one skips ahead."""
        self.touch()
        # A partition with no position starts at its earliest offset. That is asked of the broker
        # (through the consumer's thread: it took up to 1.5 s of a new worker's first batch) only
        # when its first record here is not at offset 0, before which there is nothing.
        first: dict[int, int] = {}
        for r in records:
            first.setdefault(r.partition, r.offset)
        earliest = await self._earliest(p for p, offset in first.items() if offset > 0)
        kept, gaps, durable = self.positions.split(records, lambda p: earliest.get(p, 0))
        self.skipped += durable
        for partition, offset in gaps.items():
            await self._seek(partition, offset, "skipped ahead")
        return kept

    async def watch(self, partitions: Iterable[int]) -> None:
        """Seek back partitions whose fetched records never arrived (see the module docstring)."""
        if self._busy() or time.monotonic() - self._last_records < self._stall:
            return
        partitions = list(partitions)
        earliest = await self._earliest(partitions)
        for p in partitions:
            position = self.positions.get(p)
            expected = position + 1 if position >= 0 else earliest.get(p, 0)
            fetched = await self._consumer().position(TP(self.topic, p))
            if fetched is not None and fetched > expected:
                await self._seek(p, expected, f"were fetched up to {fetched} but never arrived")
                self.touch()
