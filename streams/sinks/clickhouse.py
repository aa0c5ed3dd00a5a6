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

On a ClickHouse cluster (``clickhouse.cluster``) a block is inserted synchronously into the
replicated ``<table>_local`` of one shard, never through the ``Distributed`` table (whose
asynchronous forwarding re-cuts blocks, so a replay's token would not meet its first copy).
Rows carrying a Kafka partition go to that partition's shard (:func:`~sluice.streams.schema.shard_of`),
so a replay cut into other blocks still lands on the tables that replace its first copy; a
block without one (a metric emission group, whose token never changes) goes to the shard its
token names. Each shard's part carries the token and the shard's number.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sluice.settings import Settings
from sluice.streams._columns import columns
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.exceptions import ClickHouseUnavailable
from sluice.streams.schema import LOCAL_SUFFIX, shard_of

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
    shard: int | None = None  # on a cluster: the shard whose <table>_local it goes to


def shard_clients(settings: Settings) -> list[ClickHouse]:
    """One connection per shard of ``clickhouse.shard_urls``, in order (none for one server)."""
    ch = settings.clickhouse
    return [
        ClickHouse(settings.model_copy(update={"clickhouse": ch.model_copy(update={"url": url})}))
        for url in ch.shard_urls
    ]


def split_by_shard(columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str, shards: int) -> dict[int, list[Sequence[Any]]]:
    """``rows`` by the shard they are inserted into: their Kafka partition's, else the token's."""
    if "kafka_partition" not in columns:
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        return {int.from_bytes(digest, "big") % shards: list(rows)}
    at = list(columns).index("kafka_partition")
    parts: dict[int, list[Sequence[Any]]] = {}
    for row in rows:
        parts.setdefault(shard_of(row[at], shards), []).append(row)
    return parts


class ClickHouseSink:
    """Inserts blocks in the order they were added, retrying each until it is stored; with
    ``shards`` (a cluster), each into one shard's local table."""

    def __init__(
        self, clickhouse: ClickHouse, *, shards: Sequence[ClickHouse] = (), backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        if not 0 < backoff <= max_backoff:
            raise ValueError(f"need 0 < backoff <= max_backoff, got {backoff} and {max_backoff}")
        self.clickhouse = clickhouse
        self.shards = list(shards)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._pending: list[Block] = []
        self.rows_written: dict[str, int] = {}
        self.retries = 0

    def add(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str) -> None:
        """Queue ``rows`` (values in ``columns`` order) as one block; empty blocks are ignored."""
        if not rows:
            return
        if not self.shards:
            self._pending.append(Block(table, columns, columns_of(rows, len(columns)), len(rows), token))
            return
        for shard, part in sorted(split_by_shard(columns, rows, token, len(self.shards)).items()):
            block = Block(table, columns, columns_of(part, len(columns)), len(part), f"{token}/{shard}", shard)
            self._pending.append(block)

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
                if block.shard is None:
                    await self.clickhouse.insert_columns(block.table, block.data, block.columns, block.token)
                else:
                    await self.shards[block.shard].insert_columns(
                        block.table + LOCAL_SUFFIX, block.data, block.columns, block.token
                    )
                return
            except ClickHouseUnavailable as exc:
                self.retries += 1
                log.warning("%s; retrying in %.1fs (%d rows waiting)", exc, delay, self.pending_rows)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
