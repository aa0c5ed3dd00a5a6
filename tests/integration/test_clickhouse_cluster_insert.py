"""The cluster insert path (the real sink) into real chDB: two workers insert the same replayed
blocks, each into the local table of the shard its Kafka partition maps to, and every row is
stored once. Two databases of one chDB stand in for two shards; their ``<table>_local`` tables
are the single-server tables (non-replicated deduplication by the same tokens), as no Keeper
runs here for the Replicated engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from sluice.client import log_envelope
from sluice.settings import Settings
from sluice.streams import schema
from sluice.streams.clickhouse import ClickHouse, migrate, migrations
from sluice.streams.decode import LOG_COLUMNS, decode_batch
from sluice.streams.sinks.clickhouse import ClickHouseSink, shard_clients
from sluice.streams.windows import METRIC_COLUMNS
from sluice.v1.envelope_pb2 import EnvelopeBatch

T = 1_700_000_000 * 1_000_000_000
SHARDS = ("shard0", "shard1")


@pytest_asyncio.fixture
async def shards(tmp_path: Path) -> AsyncIterator[list[ClickHouse]]:
    no_ttl = {"ttl_days_raw": 0, "ttl_days_1s": 0, "ttl_days_1m": 0}
    found = [ClickHouse(Settings(data_dir=tmp_path, clickhouse={**no_ttl, "database": db})) for db in SHARDS]
    try:
        for ch in found:
            await ch.start()
            client = await ch._run(ch._connected)
            for table in ("logs", "metrics_1s"):
                await ch._run(client.command, f"CREATE TABLE {ch.database}.{table}_local AS {ch.database}.{table}")
        yield found
    finally:
        for ch in found:
            await ch.stop()


def logs(partition: int, offset: int) -> list[list[Any]]:
    batch = EnvelopeBatch(batch=[log_envelope(f"p{partition} line {i}", timestamp=T + i) for i in range(3)])
    return decode_batch(batch.SerializeToString(), "ak", partition, offset).logs


def metric(name: str) -> list[list[Any]]:
    return [["ak", name, 1, 1_700_000_000, "counter", "", {}, 2, 5.0, 1.0, 4.0, (T, 4.0), {}]]


async def count(ch: ClickHouse, table: str, final: str = "") -> int:
    return int((await ch.query(f"SELECT count() FROM {ch.database}.{table} {final}"))[1][0][0])


async def test_two_workers_replaying_the_same_blocks_store_each_row_once(shards: list[ClickHouse]) -> None:
    block = logs(0, 10) + logs(1, 10) + logs(2, 11) + logs(3, 12)  # one batch over four partitions
    first = ClickHouseSink(shards[0], shards=shards)  # the worker that inserted, then died uncommitted
    second = ClickHouseSink(shards[0], shards=shards)  # the partitions' next owner replays them
    for sink in (first, second, first):
        sink.add("logs", LOG_COLUMNS, block, "logs:0:10-10,1:10-10,2:11-11,3:12-12")
        sink.add("metrics_1s", METRIC_COLUMNS, metric("requests"), "metrics_1s:2:group:7")
        assert await sink.flush() == 13
    # Partitions 0 and 2 on shard 0, 1 and 3 on shard 1; the metric's group on the shard its token names.
    assert [await count(ch, "logs_local") for ch in shards] == [6, 6]
    assert sorted([await count(ch, "metrics_1s_local") for ch in shards]) == [0, 1]
    partitions = [(await ch.query(f"SELECT DISTINCT kafka_partition FROM {ch.database}.logs_local ORDER BY 1"))[1]
                  for ch in shards]
    assert partitions == [[[0], [2]], [[1], [3]]]
    # The single-server tables (what the Distributed ones would be) were never written.
    assert [await count(ch, "logs") for ch in shards] == [0, 0]

    # A replay cut into other blocks (other tokens) lands on the same shard's table, whose
    # engine replaces the first copy: read with FINAL, as every query does, each row once.
    third = ClickHouseSink(shards[0], shards=shards)
    third.add("logs", LOG_COLUMNS, logs(1, 10) + logs(2, 11), "logs:1:10-10,2:11-11")
    await third.flush()
    assert [await count(ch, "logs_local") for ch in shards] == [9, 9]
    assert [await count(ch, "logs_local", "FINAL") for ch in shards] == [6, 6]


def test_each_shard_url_gets_its_own_connection(tmp_path: Path) -> None:
    urls = ["http://ch-shard-0:8123", "http://ch-shard-1:8123", "http://ch-shard-2:8123"]
    settings = Settings(data_dir=tmp_path, clickhouse={"cluster": "sluice", "shard_urls": urls, "url": "http://ch:8123"})
    found = shard_clients(settings)
    assert [c._settings.clickhouse.url for c in found] == urls
    assert {c.database for c in found} == {"sluice"}
    assert shard_clients(Settings(data_dir=tmp_path)) == []


async def test_workers_migrating_at_once_leave_one_schema(shards: list[ClickHouse]) -> None:
    """Two workers that both found a migration missing both run it: every statement runs again
    without error, and the migration is recorded once (the table keeps one row per version)."""
    ch = shards[0]
    client = await ch._run(ch._connected)
    layout = schema.Layout("race")

    def both_workers() -> list[list[str]]:
        applied = [migrate(client, "race")]
        for version, name, sql in migrations():  # the second worker, which read the versions first
            for statement in schema.statements(sql, layout):
                client.command(statement)
            client.insert("race.schema_migrations", [[version, name]], column_names=["version", "name"])
        return applied + [migrate(client, "race")]

    first, again = await ch._run(both_workers)
    assert first == [name for _, name, _ in migrations()] and again == []
    recorded = (await ch.query("SELECT version, count() FROM race.schema_migrations FINAL GROUP BY version ORDER BY version"))[1]
    assert recorded == [[version, 1] for version, _, _ in migrations()]
    columns = (await ch.query("SELECT count() FROM system.columns WHERE database = 'race' AND table = 'metrics_1s'"))[1]
    assert columns == [[len(METRIC_COLUMNS)]]
