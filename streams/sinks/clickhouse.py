"""The ClickHouse sink: buffered blocks inserted with deterministic deduplication tokens.

A block is what one insert writes. Its token names its source positions, so a block rebuilt
from replayed records carries the same token and ClickHouse stores it once. While ClickHouse
is unavailable, :meth:`ClickHouseSink.flush` retries with backoff and does not return: the
stream waits (backpressure) instead of losing or reordering rows.

Blocks are stored column by column: clickhouse-connect pivots row-oriented data itself, one
tuple per row, and on a worker's heap of millions of objects those tuples set off garbage
collections that made the pivot ~37% of an insert. :func:`columns_of` builds one list per column
(in C, ``_columns.c``) and allocates nothing per row; :mod:`~sluice.streams.native` encodes the
columns for the insert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sluice.streams._columns import columns
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.exceptions import ClickHouseUnavailable

log = logging.getLogger(__name__)


def columns_of(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """``rows`` of ``width`` values each as ``width`` column lists; values are kept as they are."""
    found = columns(rows, width)  # in C: a list of lists or tuples of the right width, else None
    if found is not None:
        return found
    widths = set(map(len, rows))
    if widths - {width}:
        raise ValueError(f"every row needs {width} values, got rows of {sorted(widths)}")
    return [[row[i] for row in rows] for i in range(width)]


@dataclass(frozen=True, slots=True)
class Block:
    table: str
    columns: Sequence[str]
    data: list[list[Any]]  # one list per column
    rows: int
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

    def add(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str) -> None:
        """Queue ``rows`` (values in ``columns`` order) as one block; empty blocks are ignored."""
        if rows:
            self._pending.append(Block(table, columns, columns_of(rows, len(columns)), len(rows), token))

    @property
    def pending_rows(self) -> int:
        return sum(b.rows for b in self._pending)

    async def flush(self) -> int:
        """Insert every queued block, in order; rows written."""
        written = 0
        while self._pending:
            block = self._pending[0]
            await self._insert(block)
            self._pending.pop(0)
            self.rows_written[block.table] = self.rows_written.get(block.table, 0) + block.rows
            written += block.rows
        return written

    async def _insert(self, block: Block) -> None:
        delay = self._backoff
        while True:
            try:
                await self.clickhouse.insert_columns(block.table, block.data, block.columns, block.token)
                return
            except ClickHouseUnavailable as exc:
                self.retries += 1
                log.warning("%s; retrying in %.1fs (%d rows waiting)", exc, delay, self.pending_rows)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
