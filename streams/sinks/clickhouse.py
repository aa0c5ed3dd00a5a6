"""The ClickHouse sink: buffered blocks inserted with deterministic deduplication tokens.

A block is what one insert writes. Its token names its source positions, so a block rebuilt
from replayed records carries the same token and ClickHouse stores it once. While ClickHouse
is unavailable, :meth:`ClickHouseSink.flush` retries with backoff and does not return: the
stream waits (backpressure) instead of losing or reordering rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sluice.streams.clickhouse import ClickHouse
from sluice.streams.exceptions import ClickHouseUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Block:
    table: str
    columns: Sequence[str]
    rows: list[list[Any]]
    token: str


class ClickHouseSink:
    """Inserts blocks in the order they were added, retrying each until it is stored."""

    def __init__(self, clickhouse: ClickHouse, *, backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        if not 0 < backoff <= max_backoff:
            raise ValueError(f"need 0 < backoff <= max_backoff, got {backoff} and {max_backoff}")
        self.clickhouse = clickhouse
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._pending: list[Block] = []
        self.rows_written: dict[str, int] = {}
        self.retries = 0

    def add(self, table: str, columns: Sequence[str], rows: list[list[Any]], token: str) -> None:
        """Queue one block; empty blocks are ignored."""
        if rows:
            self._pending.append(Block(table, columns, rows, token))

    @property
    def pending_rows(self) -> int:
        return sum(len(b.rows) for b in self._pending)

    async def flush(self) -> int:
        """Insert every queued block, in order; rows written."""
        written = 0
        while self._pending:
            block = self._pending[0]
            await self._insert(block)
            self._pending.pop(0)
            self.rows_written[block.table] = self.rows_written.get(block.table, 0) + len(block.rows)
            written += len(block.rows)
        return written

    async def _insert(self, block: Block) -> None:
        delay = self._backoff
        while True:
            try:
                await self.clickhouse.insert(block.table, block.rows, block.columns, block.token)
                return
            except ClickHouseUnavailable as exc:
                self.retries += 1
                log.warning("%s; retrying in %.1fs (%d rows waiting)", exc, delay, self.pending_rows)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
