"""The windows' loops in C (``_aggregate.c``) against plain Python versions of the same loops
(the code they replaced): the same aggregates, series ids and rows, for generated points."""

from __future__ import annotations

import gc
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.streams import _aggregate, sketch
from sluice.streams import windows as windows_module
from sluice.streams._columns import columns
from sluice.streams.decode import COUNTER, GAUGE, TIMER, MetricPoint
from sluice.streams.windows import series_id, series_ids

NS = 1_000_000_000
T = 1_700_000_000 * NS
_COUNT, _SUM, _MIN, _MAX, _LAST_TS, _LAST, _SKETCH = 5, 6, 7, 8, 9, 10, 11


def python_aggregate(
    points: list[MetricPoint], sids: list[int], access_key: str, size_s: int, newest: int, resolve: Any
) -> int:
    """TumblingWindows.add's loop as it was in Python."""
    size_ns = size_s * NS
    last_start, into = None, None
    for (name, kind, unit, tags, ts, v, last), sid in zip(points, sids):
        newest = max(newest, ts)
        start = ts // size_ns * size_s
        if start != last_start:
            last_start, into = start, resolve(start)
        if into is None:
            continue
        agg = into.get(sid)
        if agg is None:
            agg = into[sid] = [access_key, name, kind, unit, tags, 1, v, v, v, ts, last, {}]
        else:
            agg[_COUNT] += 1
            agg[_SUM] += v
            if v < agg[_MIN]:
                agg[_MIN] = v
            elif v > agg[_MAX]:
                agg[_MAX] = v
            if ts >= agg[_LAST_TS]:
                agg[_LAST_TS], agg[_LAST] = ts, last
        if kind == TIMER:
            sketch.add(agg[_SKETCH], v)
    return newest


values = st.floats(allow_nan=False, allow_infinity=False, width=64) | st.integers(-5, 5).map(float)
point = st.tuples(
    st.sampled_from(["requests", "cpu", "db"]),
    st.sampled_from([COUNTER, GAUGE, TIMER]),
    st.sampled_from(["", "ms"]),
    st.dictionaries(st.sampled_from(["host", "route", "é"]), st.sampled_from(["a", "b", ""]), max_size=3),
    st.integers(-3 * NS, 3 * NS).map(lambda d: T + d) | st.integers(-(2**63), 2**63 - 1),
    values,
    values,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN sums (inf + -inf) equal to each other."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b) and type(a) is type(b)


@settings(max_examples=400, deadline=None)
@given(st.lists(point, max_size=40), st.sampled_from([1, 60]), st.integers(0, 2**62), st.sets(st.integers(-3, 3)))
def test_aggregate_matches_the_python_loop(points: list[MetricPoint], size_s: int, newest: int, skipped: set[int]) -> None:
    sids = [hash((p[0], tuple(p[3].items()))) % 5 for p in points]  # few series: aggregates are updated
    got: dict[int, dict[int, list[Any]]] = {}
    want: dict[int, dict[int, list[Any]]] = {}
    calls: list[int] = []

    def resolver(into: dict[int, dict[int, list[Any]]], log: list[int] | None = None) -> Any:
        def resolve(start: int) -> dict[int, list[Any]] | None:
            if log is not None:
                log.append(start)
            return None if start // size_s - T // NS // size_s in skipped else into.setdefault(start, {})
        return resolve

    new_got = _aggregate.aggregate(points, sids, "ak", size_s, newest, resolver(got, calls), TIMER, sketch.add)
    new_want = python_aggregate(points, sids, "ak", size_s, newest, resolver(want))
    assert new_got == new_want
    assert same(got, want)
    starts = [p[4] // (size_s * NS) * size_s for p in points]
    assert calls == [s for i, s in enumerate(starts) if i == 0 or starts[i - 1] != s]  # once per change of start


def test_aggregate_keeps_count_sum_extremes_last_and_sketches_exactly() -> None:
    into: dict[int, list[Any]] = {}
    points: list[MetricPoint] = [
        ("db", TIMER, "ms", {"h": "a"}, T + 5, 4.0, 4.0),
        ("db", TIMER, "ms", {"h": "a"}, T + 2, 1.0, 1.0),  # older: not the last
        ("db", TIMER, "ms", {"h": "a"}, T + 9, 9.0, 9.0),
    ]
    newest = _aggregate.aggregate(points, [7, 7, 7], "ak", 1, 0, lambda start: into, TIMER, sketch.add)
    assert newest == T + 9
    expected_sketch: dict[int, int] = {}
    for v in (4.0, 1.0, 9.0):
        sketch.add(expected_sketch, v)
    assert into == {7: ["ak", "db", TIMER, "ms", {"h": "a"}, 3, 14.0, 1.0, 9.0, T + 9, 9.0, expected_sketch]}


def test_aggregate_refuses_what_is_not_points() -> None:
    with pytest.raises(TypeError, match="same length"):
        _aggregate.aggregate([], [1], "ak", 1, 0, lambda s: {}, TIMER, sketch.add)
    with pytest.raises(TypeError, match="point 0 is not a tuple of 7 values"):
        _aggregate.aggregate([("x",)], [1], "ak", 1, 0, lambda s: {}, TIMER, sketch.add)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="size_s must be from 1"):
        _aggregate.aggregate([], [], "ak", 0, 0, lambda s: {}, TIMER, sketch.add)
    with pytest.raises(TypeError, match="resolve\\(\\) must return a dict or None"):
        _aggregate.aggregate([("m", GAUGE, "", {}, T, 1.0, 1.0)], [1], "ak", 1, 0, lambda s: [], TIMER, sketch.add)
    with pytest.raises(ZeroDivisionError):  # an error raised by resolve goes through
        _aggregate.aggregate([("m", GAUGE, "", {}, T, 1.0, 1.0)], [1], "ak", 1, 0, lambda s: 1 // 0, TIMER, sketch.add)


tags = st.dictionaries(st.sampled_from(["host", "route", "zone", "é", ""]), st.text(max_size=3), max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ak", "ak2"]), st.sampled_from(["m", "n"]), tags), max_size=30))
def test_series_ids_are_the_series_id_of_each_point(series: list[tuple[str, str, dict[str, str]]]) -> None:
    for access_key, name, t in series:
        p: MetricPoint = (name, GAUGE, "", t, T, 1.0, 1.0)
        reordered: MetricPoint = (name, GAUGE, "", dict(reversed(list(t.items()))), T, 1.0, 1.0)
        assert series_ids(access_key, [p, reordered, p]) == [series_id(access_key, name, t)] * 3


def test_a_memo_hit_is_checked_against_the_strings_and_the_memo_is_bounded() -> None:
    memo: dict[int, tuple[Any, ...]] = {}
    computed: list[tuple[str, str, dict[str, str]]] = []

    def compute(access_key: str, name: str, t: dict[str, str]) -> int:
        computed.append((access_key, name, t))
        return series_id(access_key, name, t)

    a: MetricPoint = ("m", GAUGE, "", {"host": "a"}, T, 1.0, 1.0)
    b: MetricPoint = ("m", GAUGE, "", {"host": "b"}, T, 1.0, 1.0)
    assert _aggregate.series_ids("ak", [a, a], memo, 10, compute) == [series_id("ak", "m", {"host": "a"})] * 2
    assert len(computed) == 1
    # A memo entry under the hash of b that names another series (a collision) is not b's id.
    [(key, entry)] = memo.items()
    hash_b = next(iter(set(_memo_keys("ak", [b])) - {key}))
    memo[hash_b] = entry
    assert _aggregate.series_ids("ak", [b], memo, 10, compute) == [series_id("ak", "m", {"host": "b"})]
    assert len(computed) == 2
    # Full: the memo starts again rather than growing.
    _aggregate.series_ids("ak", [("m", GAUGE, "", {"n": str(i)}, T, 1.0, 1.0) for i in range(25)], memo, 10, compute)
    assert len(memo) <= 10


def _memo_keys(access_key: str, points: list[MetricPoint]) -> list[int]:
    memo: dict[int, tuple[Any, ...]] = {}
    _aggregate.series_ids(access_key, points, memo, 100, series_id)
    return list(memo)


def test_series_ids_refuse_points_without_tags_dicts() -> None:
    with pytest.raises(TypeError, match="point 0: tags are not a dict"):
        windows_module.series_ids("ak", [("m", GAUGE, "", [("a", "b")], T, 1.0, 1.0)])  # type: ignore[list-item]


def test_window_rows_are_the_values_by_series_id_in_metric_columns_order() -> None:
    sk = {3: 1}
    values = {
        9: ["ak", "b", GAUGE, "%", {"h": "x"}, 2, 3.0, 1.0, 2.0, T + 1, 2.0, {}],
        2: ["ak", "a", TIMER, "ms", {}, 1, 5.0, 5.0, 5.0, T, 5.0, sk],
    }
    rows = _aggregate.window_rows(values, 1_700_000_000)
    assert rows == [
        ["ak", "a", 2, 1_700_000_000, TIMER, "ms", {}, 1, 5.0, 5.0, 5.0, (T, 5.0), sk],
        ["ak", "b", 9, 1_700_000_000, GAUGE, "%", {"h": "x"}, 2, 3.0, 1.0, 2.0, (T + 1, 2.0), {}],
    ]
    assert all(len(r) == len(windows_module.METRIC_COLUMNS) for r in rows)
    assert rows[0][12] is sk
    with pytest.raises(TypeError, match="not a list of 12 values"):
        _aggregate.window_rows({1: ["short"]}, 0)


def test_what_the_loops_make_is_left_to_refcounting() -> None:
    into: dict[int, list[Any]] = {}
    _aggregate.aggregate([("m", GAUGE, "", {}, T, 1.0, 1.0)], [1], "ak", 1, 0, lambda s: into, TIMER, sketch.add)
    rows = _aggregate.window_rows(into, 0)
    cols = columns(rows, 13)
    assert cols is not None
    assert not gc.is_tracked(into[1]) and not gc.is_tracked(rows[0]) and not gc.is_tracked(rows[0][11])
    assert not any(gc.is_tracked(c) for c in cols)


def test_columns_in_c_take_lists_and_tuples_and_leave_anything_else() -> None:
    row = ["a", 1, {"h": "x"}]
    assert columns([row, ("b", 2, {})], 3) == [["a", "b"], [1, 2], [{"h": "x"}, {}]]
    assert columns([], 2) == [[], []]
    assert columns([row, ["a", 1]], 3) is None
    assert columns([row, "abc"], 3) is None  # a string of the right length is not a row
    assert columns((row,), 3) is None  # type: ignore[arg-type]
