"""The sink's shard routing on a cluster, with fakes for the shards: which shard's local table each
part of a block goes to, with which token, and that a failing shard is retried without moving."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sluice.streams.clickhouse import apply_ttls
from sluice.streams.exceptions import ClickHouseUnavailable
from sluice.streams.schema import Layout
from sluice.streams.sinks.clickhouse import ClickHouseSink, split_by_shard

COLUMNS = ("access_key", "payload", "kafka_partition", "kafka_offset")


class FakeShard:
    def __init__(self, failures: int = 0) -> None:
        self.inserts: list[tuple[str, list[list[Any]], str]] = []
        self.failures = failures

    async def insert_columns(self, table: str, data: Sequence[Sequence[Any]], columns: Sequence[str], token: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ClickHouseUnavailable("shard down")
        self.inserts.append((table, [list(c) for c in data], token))


def rows(*partitions: int) -> list[list[Any]]:
    return [["ak", f"line {i}", p, 100 + i] for i, p in enumerate(partitions)]


def test_rows_go_to_their_partitions_shard_and_blocks_without_one_to_their_tokens() -> None:
    assert split_by_shard(COLUMNS, rows(0, 1, 2, 3, 4), "t", 3) == {
        0: [["ak", "line 0", 0, 100], ["ak", "line 3", 3, 103]],
        1: [["ak", "line 1", 1, 101], ["ak", "line 4", 4, 104]],
        2: [["ak", "line 2", 2, 102]],
    }
    # A block without a partition column (a metric emission group) goes whole to the shard its
    # token names: the first 8 bytes of its BLAKE2b, big-endian, modulo the shards.
    metric = [["ak", "requests", 1]]
    for token in ("metrics_1s:0:group:1", "metrics_1s:0:group:2", "metrics_1m:5:group:9"):
        shard = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big") % 4
        assert split_by_shard(("access_key", "name", "series_id"), metric, token, 4) == {shard: metric}


async def test_each_part_goes_to_one_shards_local_table_and_is_retried_there() -> None:
    shards = [FakeShard(), FakeShard(failures=2)]
    main = FakeShard()
    sink = ClickHouseSink(main, shards=shards, backoff=0.001, max_backoff=0.002)  # type: ignore[arg-type]
    sink.add("logs", COLUMNS, rows(0, 1, 2), "logs:0-2")
    assert await sink.flush() == 3
    assert main.inserts == []
    assert shards[0].inserts == [("logs_local", [["ak", "ak"], ["line 0", "line 2"], [0, 2], [100, 102]], "logs:0-2/0")]
    assert shards[1].inserts == [("logs_local", [["ak"], ["line 1"], [1], [101]], "logs:0-2/1")]
    assert sink.retries == 2 and sink.rows_written == {"logs": 3}


class _RecordingClient:
    """What apply_ttls sends, with every table's engine as given."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.asked: list[str] = []
        self.commands: list[str] = []

    def query(self, sql: str, parameters: dict[str, str]) -> object:
        self.asked.append(parameters["t"])
        return type("Result", (), {"result_rows": [[self.engine]]})()

    def command(self, sql: str) -> None:
        self.commands.append(sql)


def test_ttls_on_a_cluster_alter_the_local_tables_on_every_node() -> None:
    client = _RecordingClient("ReplicatedReplacingMergeTree('/p', '{replica}') ORDER BY x")
    changed = apply_ttls(client, Layout("sluice", "prod"), {"logs": ("toDateTime(timestamp)", 30)})  # type: ignore[arg-type]
    assert changed == ["logs"] and client.asked == ["logs_local"]
    assert client.commands == [
        "ALTER TABLE sluice.logs_local ON CLUSTER 'prod' MODIFY TTL toDateTime(timestamp) + toIntervalDay(30)"
    ]
    one_server = _RecordingClient("ReplacingMergeTree ORDER BY x TTL toDateTime(timestamp) + toIntervalDay(30)")
    assert apply_ttls(one_server, Layout("sluice"), {"logs": ("toDateTime(timestamp)", 0)}) == ["logs"]  # type: ignore[arg-type]
    assert one_server.asked == ["logs"] and one_server.commands == ["ALTER TABLE sluice.logs REMOVE TTL"]
