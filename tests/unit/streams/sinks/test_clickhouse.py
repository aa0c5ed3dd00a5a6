"""The ClickHouse sink: rows become column lists, blocks keep their order, tokens and retries."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from sluice.streams.exceptions import ClickHouseUnavailable
from sluice.streams.sinks.clickhouse import ClickHouseSink, columns_of
from tests.unit.streams.test_pipeline import FakeClickHouse

T = 1_700_000_000_123_456_789  # a DateTime64(9) value: ns since the epoch


def test_rows_become_one_list_per_column_with_every_value_kept() -> None:
    tags, sketch, empty_tags = {"host": "h1", "route": "/r"}, {-3: 2, 17: 1}, dict[str, str]()
    when = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=timezone.utc)
    rows = [
        ["ak", T, tags, (T, 2.5), sketch, None, ""],
        ("ak", when, empty_tags, (0, -0.0), {}, 7, "ü"),
    ]
    columns = columns_of(rows, 7)
    assert columns == [
        ["ak", "ak"],
        [T, when],
        [{"host": "h1", "route": "/r"}, {}],
        [(T, 2.5), (0, -0.0)],
        [{-3: 2, 17: 1}, {}],
        [None, 7],
        ["", "ü"],
    ]
    assert all(type(c) is list for c in columns)
    # The values themselves, not copies: Map and Tuple values go to clickhouse-connect as given.
    assert columns[2][0] is tags and columns[2][1] is empty_tags and columns[4][0] is sketch
    assert columns[1][0] == T and type(columns[1][0]) is int


def test_no_rows_give_empty_columns_and_a_row_of_the_wrong_width_is_refused() -> None:
    assert columns_of([], 3) == [[], [], []]
    assert columns_of([[None]], 1) == [[None]]
    with pytest.raises(ValueError, match=r"every row needs 3 values, got rows of \[2, 3\]"):
        columns_of([[1, 2, 3], [1, 2]], 3)
    with pytest.raises(ValueError, match=r"every row needs 2 values, got rows of \[3\]"):
        columns_of([[1, 2, 3]], 2)


async def test_blocks_are_inserted_column_oriented_in_order_with_their_tokens() -> None:
    fake = FakeClickHouse(failures=2)
    sink = ClickHouseSink(fake, backoff=0.001, max_backoff=0.002)  # type: ignore[arg-type]
    sink.add("logs", ("a", "b"), [["x", 1], ["y", 2]], "t1")
    sink.add("logs", ("a", "b"), [], "t-empty")  # ignored
    sink.add("metrics_1s", ("a", "last", "tags"), [["k", (T, 1.0), {"h": "1"}]], "t2")
    assert sink.pending_rows == 3
    assert await sink.flush() == 3
    # The block that failed twice went in whole, with its token.
    assert fake.inserts == [
        ("logs", [["x", 1], ["y", 2]], "t1"),
        ("metrics_1s", [["k", (T, 1.0), {"h": "1"}]], "t2"),
    ]
    assert (sink.retries, sink.pending_rows, sink.rows_written) == (2, 0, {"logs": 2, "metrics_1s": 1})
    with pytest.raises(ValueError, match="every row needs 2 values"):
        sink.add("logs", ("a", "b"), [["x"]], "t3")
    assert sink.pending_rows == 0


async def test_warming_up_an_unreachable_clickhouse_is_left_to_the_first_insert(tmp_path: Path) -> None:
    import socket

    from sluice.settings import Settings
    from sluice.streams.clickhouse import ClickHouse

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(data_dir=tmp_path, clickhouse={"url": f"http://127.0.0.1:{port}"})
    clickhouse = ClickHouse(settings)
    try:
        assert await clickhouse.warm_up() is False
        with pytest.raises(ClickHouseUnavailable):
            await clickhouse.start()  # what the first insert meets, and the sink retries
    finally:
        await clickhouse.stop()
