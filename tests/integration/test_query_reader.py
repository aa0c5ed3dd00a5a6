"""Reads on real chDB, in the process that inserts: on connections of their own, read-only, so a
refused statement leaves the inserts' session as it was; without a worker, `sluice query` reads
chDB directly, read-only as well."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sluice.client import log_envelope
from sluice.settings import Settings
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.decode import LOG_COLUMNS, decode_batch
from sluice.streams.exceptions import QueryError
from sluice.streams.query import run_query
from sluice.streams.reader import Reader, ReadRefused
from sluice.tansu import free_port
from sluice.v1.envelope_pb2 import EnvelopeBatch

REFUSED = (
    "OPTIMIZE TABLE sluice.logs FINAL",
    "INSERT INTO sluice.logs (access_key) VALUES ('x')",
    "CREATE TABLE sluice.intruder (x UInt8) ENGINE = Memory",
    "SET readonly = 0",
    "SELECT 1 SETTINGS max_execution_time = 1000",
    # What readonly = 1 alone lets through:
    "KILL QUERY WHERE 1",
    "SYSTEM STOP MERGES",
    "SELECT 1; OPTIMIZE TABLE sluice.logs FINAL",
)


def logs(*payloads: str) -> list[list[object]]:
    batch = EnvelopeBatch(batch=[log_envelope(p, source_id="s", timestamp=1_900_000_000 * 10**9) for p in payloads])
    return [list(c) for c in zip(*decode_batch(batch.SerializeToString(), "ak", 0, 0).logs)]


async def test_refused_statements_leave_the_inserts_session_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    writer, reader = ClickHouse(settings), Reader(settings)
    await writer.start()
    try:
        await writer.insert_columns("logs", logs("before"), LOG_COLUMNS, "t1")
        for sql in REFUSED:
            with pytest.raises(ReadRefused) as refused:
                await reader.query(sql)
            assert (refused.value.status, refused.value.outcome) == (403, "readonly"), sql
        await writer.insert_columns("logs", logs("after"), LOG_COLUMNS, "t2")
        assert await reader.query("SELECT payload FROM sluice.logs ORDER BY payload") == (
            ["payload"], [["after"], ["before"]]
        )
        assert (await reader.query("SELECT count() FROM system.tables WHERE name = 'intruder'"))[1] == [[0]]
        with pytest.raises(ReadRefused, match="INTO OUTFILE would write a file"):
            await reader.query(f"SELECT 'written' INTO OUTFILE '{tmp_path / 'out.txt'}'")
        assert not (tmp_path / "out.txt").exists()
    finally:
        await reader.stop()
        await writer.stop()


async def test_results_and_memory_over_their_limits_are_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, query={"max_result_rows": 10, "max_memory_bytes": 1 << 20})
    reader = Reader(settings)
    try:
        assert len((await reader.query("SELECT number FROM numbers(10)"))[1]) == 10
        with pytest.raises(ReadRefused, match=r"^the result has more than query.max_result_rows \(10\) rows$"):
            await reader.query("SELECT number FROM numbers(11)")
        with pytest.raises(ReadRefused, match=r"^the query needs more than query.max_memory_bytes \(1048576\) of memory$"):
            await reader.query("SELECT length(groupArray(number)) FROM numbers(10000000)")
    finally:
        await reader.stop()


async def test_without_a_worker_queries_read_chdb_directly_and_read_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, worker={"web_port": free_port()})  # no worker answers there
    writer = ClickHouse(settings)
    await writer.start()
    await writer.insert_columns("logs", logs("stored"), LOG_COLUMNS, "t1")
    await writer.stop()
    assert await asyncio.to_thread(run_query, settings, "SELECT payload, {n:UInt8} + 1 AS m FROM sluice.logs", {"n": 1}) == (
        ["payload", "m"], [["stored", 2]]
    )
    for sql in REFUSED:
        with pytest.raises(QueryError, match=r"^refused: queries are read-only \(readonly mode\)"):
            await asyncio.to_thread(run_query, settings, sql)
