"""Tumbling windows over a dict-backed state."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from sluice.streams import sketch
from sluice.streams.decode import COUNTER, GAUGE, TIMER, MetricPoint
from sluice.streams.windows import TumblingWindows, series_id

NS = 1_000_000_000
T = 1_700_000_000 * NS


class DictState:
    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {}
        self.writes: list[tuple[int, str, list[Any] | None]] = []

    def get(self, key: str) -> list[Any] | None:
        value = self.data.get(key)
        return None if value is None else list(value)

    def put(self, partition: int, key: str, value: list[Any]) -> None:
        self.data[key] = list(value)
        self.writes.append((partition, key, list(value)))

    def delete(self, partition: int, key: str) -> None:
        del self.data[key]
        self.writes.append((partition, key, None))

    def keys(self) -> Iterable[str]:
        return list(self.data)


def counter(ts: int, delta: float, **tags: str) -> MetricPoint:
    return MetricPoint("requests", COUNTER, "", dict(tags), ts, delta, 0.0)


def gauge(ts: int, value: float) -> MetricPoint:
    return MetricPoint("cpu", GAUGE, "%", {}, ts, value, value)


def windows(state: DictState | None = None) -> TumblingWindows:
    return TumblingWindows(state or DictState(), size=1, lateness=1, idle_close=1)


def test_series_id_ignores_tag_order_and_separates_keys() -> None:
    assert series_id("k", "m", {"a": "1", "b": "2"}) == series_id("k", "m", {"b": "2", "a": "1"})
    assert series_id("k", "m", {}) != series_id("k2", "m", {})
    assert series_id("k", "m", {"a": "1"}) != series_id("k", "m", {"a": "2"})


def test_a_record_is_pre_aggregated_into_one_write_per_series_and_window() -> None:
    state = DictState()
    w = windows(state)
    assert w.add(0, 10, "k", [counter(T + 1, 2), counter(T + 2, 3), counter(T + NS, 4), gauge(T + 5, 9)])
    sid = series_id("k", "requests", {})
    assert [(p, k) for p, k, _ in state.writes] == [
        (0, f"0|{T // NS}|{sid}"),
        (0, f"0|{T // NS + 1}|{sid}"),
        (0, f"0|{T // NS}|{series_id('k', 'cpu', {})}"),
        (0, "0|@applied"),
    ]
    assert state.data[f"0|{T // NS}|{sid}"] == ["k", "requests", COUNTER, "", {}, 2, 5.0, 2.0, 3.0, T + 2, 0.0, {}, 10]


def test_a_replayed_offset_changes_nothing() -> None:
    state = DictState()
    w = windows(state)
    assert w.add(1, 5, "k", [counter(T, 1)])
    before = dict(state.data)
    assert not w.add(1, 5, "k", [counter(T, 1)])
    assert not w.add(1, 4, "k", [counter(T, 1)])
    assert state.data == before
    assert w.applied_offset(1) == 5 and w.applied_offset(0) == -1


def test_windows_close_on_the_partition_clock_and_are_staged() -> None:
    w = windows()
    w.add(0, 0, "k", [gauge(T + 100, 5), gauge(T + 200, 1), gauge(T + 300, 3)])
    w.add(0, 1, "k", [gauge(T + NS + 1, 7)])
    # The clock is the newest timestamp (T + 1s): no window has passed its end plus 1s lateness.
    assert w.close([0], now_ns=T) == []
    # Newer data moves the clock: the first window closes, the second stays open.
    w.add(0, 2, "k", [gauge(T + 2 * NS, 8)])
    (closed,) = w.close([0], now_ns=T)
    assert (closed.partition, closed.start, closed.offset) == (0, T // NS, 0)
    sid = series_id("k", "cpu", {})
    assert closed.rows == [["k", "cpu", sid, T // NS, GAUGE, "%", {}, 3, 9.0, 1.0, 5.0, (T + 300, 3.0), {}]]
    w.stage(closed)
    assert sorted(s for (_, s) in w.open_windows([0])) == [T // NS + 1, T // NS + 2]
    # A quiet partition closes on the wall clock minus idle_close.
    assert [c.start for c in w.close([0], now_ns=T + 10 * NS)] == [T // NS + 1, T // NS + 2]


def test_closing_only_looks_at_the_given_partitions() -> None:
    w = windows()
    w.add(0, 0, "k", [counter(T, 1)])
    w.add(1, 0, "k", [counter(T, 2)])
    assert [(c.partition, c.rows[0][8]) for c in w.close([1], now_ns=T + 10 * NS)] == [(1, 2.0)]


def test_a_late_point_reopens_its_window_as_a_correction_partial() -> None:
    w = windows()
    w.add(0, 0, "k", [counter(T, 1)])
    (first,) = w.close([0], now_ns=T + 10 * NS)
    w.stage(first)
    w.add(0, 1, "k", [counter(T + 5, 10)])
    (late,) = w.close([0], now_ns=T + 10 * NS)
    assert (late.start, late.offset) == (first.start, 1)
    assert late.rows[0][7:9] == [1, 10.0]
    w.stage(late)
    # Two outbox entries of one window, told apart by their offsets.
    assert [(o.start, o.offset, o.rows[0][7:9]) for o in w.outbox([0])] == [(first.start, 0, [1, 1.0]), (first.start, 1, [1, 10.0])]


def test_the_outbox_survives_json_and_is_dropped_when_done() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 3, "k", [MetricPoint("db", TIMER, "ms", {"a": "b"}, T, 5.0, 5.0)])
    (closed,) = w.close([0], now_ns=T + 10 * NS)
    w.stage(closed)
    assert w.open_windows([0]) == {}
    # What recovery from the changelog gives back: JSON.
    state.data = json.loads(json.dumps(state.data))
    (staged,) = w.outbox([0])
    assert staged.rows == closed.rows and isinstance(staged.rows[0][11], tuple)
    assert (staged.partition, staged.start, staged.offset) == (0, closed.start, 3)
    assert w.outbox([1]) == []
    w.done(staged)
    assert w.outbox([0]) == [] and sorted(state.data) == ["0|@applied"]


def test_a_write_persisted_without_its_applied_marker_is_not_applied_twice() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1)])
    w.add(0, 2, "k", [counter(T, 2), counter(T + NS, 4)])
    # A crash kept the first value write of offset 2 but neither the second nor the marker.
    state.data["0|@applied"] = [1]
    del state.data[f"0|{T // NS + 1}|{series_id('k', 'requests', {})}"]
    assert w.add(0, 2, "k", [counter(T, 2), counter(T + NS, 4)])
    assert sorted((c.start, c.rows[0][7], c.rows[0][8]) for c in w.close([0], now_ns=T + 10 * NS)) == [
        (T // NS, 2, 3.0), (T // NS + 1, 1, 4.0)
    ]


@pytest.mark.parametrize("size", [0, 0.5, 1.5])
def test_window_size_must_be_whole_seconds(size: float) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        TumblingWindows(DictState(), size=size, lateness=0, idle_close=0)


def test_one_minute_windows_and_forced_closing() -> None:
    w = TumblingWindows(DictState(), size=60, lateness=1, idle_close=1)
    m0 = T // NS // 60 * 60
    w.add(0, 0, "k", [counter(m0 * NS, 1), counter(m0 * NS + 59 * NS, 2), counter(m0 * NS + 60 * NS, 4)])
    assert w.close([0], now_ns=m0 * NS) == []
    (forced, later) = w.close([0], now_ns=m0 * NS, force=True)
    assert [(c.start, c.rows[0][7], c.rows[0][8]) for c in (forced, later)] == [(m0, 2, 3.0), (m0 + 60, 1, 4.0)]


def test_timer_windows_carry_a_sketch_that_merges_across_records() -> None:
    state = DictState()
    w = windows(state)
    timer = lambda ms: MetricPoint("db", TIMER, "ms", {}, T, ms, ms)  # noqa: E731
    w.add(0, 0, "k", [timer(1.0), timer(100.0)])
    w.add(0, 1, "k", [timer(100.0)])
    # The changelog gives JSON back: bucket keys become strings, and merge again.
    key = next(k for k in state.data if not k.endswith("@applied"))
    state.data[key][11] = {str(b): n for b, n in state.data[key][11].items()}
    w.add(0, 2, "k", [timer(0.0)])
    (closed,) = w.close([0], now_ns=T + 10 * NS)
    assert closed.rows[0][12] == {sketch.ZERO: 1, sketch.bucket(1.0): 1, sketch.bucket(100.0): 2}


def test_values_left_behind_by_a_crash_while_staging_are_not_emitted_again() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1), gauge(T, 5)])
    w.add(0, 2, "k", [MetricPoint("db", TIMER, "ms", {}, T, 3.0, 3.0)])
    (closed,) = w.close([0], now_ns=T + 10 * NS)
    assert len(closed.keys) == 3
    # The crash: the outbox entry and one of the three deletes made it to the changelog.
    state.put(0, closed.outbox_key, [[closed.offset, closed.rows]])
    state.delete(0, closed.keys[0])
    recovered = windows(state)
    recovered.add(0, 3, "k", [counter(T + 1, 10)])  # a late point after the restart
    (again,) = recovered.close([0], now_ns=T + 10 * NS)
    assert [r[7:9] for r in again.rows] == [[1, 10.0]] and again.offset == 3
    recovered.stage(again)
    assert [(o.offset, len(o.rows)) for o in recovered.outbox([0])] == [(2, 3), (3, 1)]
    assert recovered.open_windows([0]) == {}


def test_no_window_closes_while_a_record_is_half_applied() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1)])
    w.add(0, 2, "k", [counter(T, 2), gauge(T, 7)])
    # The crash kept the counter's write of offset 2, not the gauge's nor the marker.
    state.data["0|@applied"] = [1]
    del state.data[f"0|{T // NS}|{series_id('k', 'cpu', {})}"]
    recovered = windows(state)
    assert recovered.close([0], now_ns=T + 10 * NS) == []
    assert recovered.add(0, 2, "k", [counter(T, 2), gauge(T, 7)])  # read again
    (closed,) = recovered.close([0], now_ns=T + 10 * NS)
    assert sorted((r[1], r[7], r[8]) for r in closed.rows) == [("cpu", 1, 7.0), ("requests", 2, 3.0)]
