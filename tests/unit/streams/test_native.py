"""The C Native encoder makes the bytes clickhouse-connect's own column writers make of the same
columns, for every table's types; values it cannot write are refused with the column named."""

from __future__ import annotations

from typing import Any

import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform

from sluice.streams.native import NotEncodable, encode, layout

LOGS = [
    ("access_key", "LowCardinality(String)"), ("timestamp", "DateTime64(9, 'UTC')"),
    ("source_id", "LowCardinality(String)"), ("instance_id", "String"), ("type", "Enum8('OUT' = 0, 'ERR' = 1)"),
    ("payload", "String"), ("tags", "Map(LowCardinality(String), String)"), ("kafka_partition", "UInt32"),
    ("kafka_offset", "UInt64"), ("batch_index", "UInt32"),
]
METRICS = [
    ("access_key", "LowCardinality(String)"), ("name", "LowCardinality(String)"), ("series_id", "UInt64"),
    ("window_start", "DateTime('UTC')"), ("kind", "SimpleAggregateFunction(any, LowCardinality(String))"),
    ("unit", "SimpleAggregateFunction(any, String)"), ("tags", "SimpleAggregateFunction(any, Map(String, String))"),
    ("count", "SimpleAggregateFunction(sum, UInt64)"), ("sum", "SimpleAggregateFunction(sum, Float64)"),
    ("min", "SimpleAggregateFunction(min, Float64)"), ("max", "SimpleAggregateFunction(max, Float64)"),
    ("last", "SimpleAggregateFunction(max, Tuple(Int64, Float64))"),
    ("sketch", "SimpleAggregateFunction(sumMap, Map(Int32, UInt64))"),
]
T = 1_700_000_000 * 10**9 + 123_456_789


def log_rows(n: int) -> list[list[Any]]:
    return [
        [f"ak_{i % 3}", T + i, "" if i % 5 == 0 else f"src{i % 7}", str(i), "ERR" if i % 4 == 0 else "OUT",
         "héllo \x00 wörld \ufffd" * (i % 3), {} if i % 6 == 0 else {"host": f"h{i}", "é": ""},
         i % 4, 2**63 + i, i]
        for i in range(n)
    ]


def metric_rows(n: int) -> list[list[Any]]:
    return [
        [f"ak_{i % 2}", f"metric_{i % 300}", 2**64 - 1 - i, 1_700_000_000 + i, "timer" if i % 2 else "counter",
         "ms" if i % 3 else "", {"route": f"/r{i % 9}"} if i % 2 else {}, i + 1, i * 0.5, -1.5, 1e300,
         (T + i, float(i)), {-12: 1, 3: i + 1} if i % 2 else {}]
        for i in range(n)
    ]


def clickhouse_connect_bytes(columns: list[tuple[str, str]], rows: list[list[Any]]) -> bytes:
    context = InsertContext(
        "t", [n for n, _ in columns], [get_from_name(t) for _, t in columns],
        [list(c) for c in zip(*rows)], column_oriented=True, block_size=len(rows) or 1,
    )
    body = b"".join(NativeTransform.build_insert(context))
    return body[body.index(b"\n") + 1:]  # after its INSERT statement


@pytest.mark.parametrize("columns", [LOGS, METRICS], ids=["logs", "metrics"])
@pytest.mark.parametrize("n", [1, 255, 256, 3000])  # 300 metric names: a dictionary index of two bytes
def test_the_bytes_are_clickhouse_connects(columns: list[tuple[str, str]], n: int) -> None:
    rows = (log_rows if columns is LOGS else metric_rows)(n)
    ours = encode(layout([c for c, _ in columns], [t for _, t in columns]), [list(c) for c in zip(*rows)])
    assert ours == clickhouse_connect_bytes(columns, rows)


def test_an_unknown_type_or_a_bad_value_is_refused_naming_its_column() -> None:
    with pytest.raises(NotEncodable, match="column x of type Array"):
        layout(["x"], ["Array(String)"])
    ok = layout(["n", "type"], ["UInt32", "Enum8('OUT' = 0, 'ERR' = 1)"])
    with pytest.raises(OverflowError, match="column n: -1 is out of range"):
        encode(ok, [[-1], ["OUT"]])
    with pytest.raises(TypeError, match="column n: expected int, got str"):
        encode(ok, [["1"], ["OUT"]])
    with pytest.raises(ValueError, match="column type: 'WARN' is not one of"):
        encode(ok, [[1], ["WARN"]])
