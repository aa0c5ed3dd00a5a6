"""Tumbling windows over a dict-backed state."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import pytest

from sluice.streams import sketch
from sluice.streams import windows as windows_module
from sluice.streams.decode import COUNTER, GAUGE, TIMER, MetricPoint
from sluice.streams.windows import TumblingWindows, series_id, series_ids

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
    return ("requests", COUNTER, "", dict(tags), ts, delta, 0.0)


def gauge(ts: int, value: float) -> MetricPoint:
    return ("cpu", GAUGE, "%", {}, ts, value, value)


def windows(state: DictState | None = None) -> TumblingWindows:
    return TumblingWindows(state or DictState(), size=1, lateness=1, idle_close=1)


def test_series_id_ignores_tag_order_and_separates_keys() -> None:
    assert series_id("k", "m", {"a": "1", "b": "2"}) == series_id("k", "m", {"b": "2", "a": "1"})
    assert series_id("k", "m", {}) != series_id("k2", "m", {})
    assert series_id("k", "m", {"a": "1"}) != series_id("k", "m", {"a": "2"})


def test_series_ids_are_worked_out_once_per_record_for_every_window_size() -> None:
    points = [counter(T, 1, host="a"), gauge(T, 2.0), counter(T + NS, 3, host="a")]
    requests, cpu = series_id("k", "requests", {"host": "a"}), series_id("k", "cpu", {})
    assert series_ids("k", points) == [requests, cpu, requests]
    w1, w60 = windows(), TumblingWindows(DictState(), size=60, lateness=1, idle_close=1)
    sids = [11, 22, 11]  # the ids given are the ones used
    assert w1.add(0, 1, "k", points, sids) and w60.add(0, 1, "k", points, sids)
    assert sorted((r[2], r[3], r[7]) for c in w1.close([0], force=True) for r in c.rows) == [
        (11, T // NS, 1), (11, T // NS + 1, 1), (22, T // NS, 1),
    ]
    assert sorted((r[2], r[7]) for c in w60.close([0], force=True) for r in c.rows) == [(11, 2), (22, 1)]


def test_points_before_the_epoch_fall_in_their_own_windows() -> None:
    w = windows()
    assert w.add(0, 1, "k", [counter(-5, 1), counter(-NS - 5, 2), counter(5, 4)])
    assert sorted((c.start, r[7], r[8]) for c in w.close([0], force=True) for r in c.rows) == [
        (-2, 1, 2.0), (-1, 1, 1.0), (0, 1, 4.0),
    ]


def test_a_batch_writes_one_delta_per_window_then_the_marker() -> None:
    state = DictState()
    w = windows(state)
    assert w.add(0, 10, "k", [counter(T + 1, 2), counter(T + 2, 3), counter(T + NS, 4), gauge(T + 5, 9)])
    assert w.add(0, 11, "k", [counter(T + 3, 5)])
    assert state.writes == []  # nothing before the flush
    w.flush()
    sid, cpu = series_id("k", "requests", {}), series_id("k", "cpu", {})
    assert state.writes == [
        (0, f"0|{T // NS}|@d|11|0", [1, [
            [sid, "k", "requests", COUNTER, "", {}, 3, 10.0, 2.0, 5.0, T + 3, 0.0, {}],
            [cpu, "k", "cpu", GAUGE, "%", {}, 1, 9.0, 9.0, 9.0, T + 5, 9.0, {}],
        ]]),
        (0, f"0|{T // NS + 1}|@d|11|0", [1, [[sid, "k", "requests", COUNTER, "", {}, 1, 4.0, 4.0, 4.0, T + NS, 0.0, {}]]]),
        (0, "0|@applied", [11]),
    ]
    w.flush()
    assert len(state.writes) == 3  # nothing new, nothing written


def test_a_new_window_takes_its_first_batch_and_its_delta_keeps_what_was_written() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T + 1, 2), counter(T + 2, 3)])
    w.flush()
    first = copy.deepcopy(state.data[f"0|{T // NS}|@d|1|0"])
    w.add(0, 2, "k", [counter(T + 3, 5), gauge(T + 4, 7)])
    w.flush()
    assert state.data[f"0|{T // NS}|@d|1|0"] == first  # the window's values went on changing, not the delta
    [closed] = w.close([0], force=True)
    assert [r[2] for r in closed.rows] == sorted(r[2] for r in closed.rows)  # by series id
    by_name = {r[1]: r[7:12] for r in closed.rows}
    assert by_name == {"requests": [3, 10.0, 2.0, 5.0, (T + 3, 0.0)], "cpu": [1, 7.0, 7.0, 7.0, (T + 4, 7.0)]}


def test_windows_close_on_the_partition_clock_and_are_staged() -> None:
    w = windows()
    w.add(0, 0, "k", [gauge(T + 100, 5), gauge(T + 200, 1), gauge(T + 300, 3)])
    w.add(0, 1, "k", [gauge(T + NS + 1, 7)])
    # The clock is the newest timestamp (T + 1s): no window has passed its end plus 1s lateness.
    assert w.close([0], now_ns=T) == []
    # Newer data moves the clock: the first window closes, the second stays open.
    w.add(0, 2, "k", [gauge(T + 2 * NS, 8)])
    (closed,) = w.close([0], now_ns=T)
    # Its offset is the newest of the batch that last wrote it (records 0 and 1 were flushed together).
    assert (closed.partition, closed.start, closed.offset) == (0, T // NS, 1)
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
    assert [(o.start, o.offset, o.seq, o.rows[0][7:9]) for o in w.outbox([0])] == [
        (first.start, 0, 0, [1, 1.0]), (first.start, 1, 1, [1, 10.0])
    ]


def test_the_outbox_survives_json_and_is_dropped_when_done() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 3, "k", [("db", TIMER, "ms", {"a": "b"}, T, 5.0, 5.0)])
    (closed,) = w.close([0], now_ns=T + 10 * NS)
    w.stage(closed)
    assert w.open_windows([0]) == {}
    (in_memory,) = w.outbox([0])
    # What recovery from the changelog gives back: JSON.
    state.data = json.loads(json.dumps(state.data))
    recovered = windows(state)
    (staged,) = recovered.outbox([0])
    assert staged == in_memory and isinstance(staged.rows[0][11], tuple)
    assert (staged.partition, staged.start, staged.offset, staged.seq, staged.rows) == (0, closed.start, 3, 0, closed.rows)
    assert recovered.outbox([1]) == []
    recovered.done(staged)
    assert recovered.outbox([0]) == [] and sorted(state.data) == ["0|@applied", "0|@seq"]


def test_a_delta_persisted_without_its_marker_is_not_applied_twice() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1)])
    w.flush()
    w.add(0, 2, "k", [counter(T, 2), counter(T + NS, 4)])
    w.flush()
    # A crash kept the first delta of offset 2 but neither the second nor the marker.
    state.data["0|@applied"] = [1]
    del state.data[f"0|{T // NS + 1}|@d|2|0"]
    recovered = windows(state)
    assert recovered.add(0, 2, "k", [counter(T, 2), counter(T + NS, 4)])
    assert sorted((c.start, c.rows[0][7], c.rows[0][8]) for c in recovered.close([0], now_ns=T + 10 * NS)) == [
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


def test_timer_windows_carry_a_sketch_that_merges_across_records_and_restarts() -> None:
    state = DictState()
    w = windows(state)

    def timer(ms: float) -> MetricPoint:
        return ("db", TIMER, "ms", {}, T, ms, ms)

    w.add(0, 0, "k", [timer(1.0), timer(100.0)])
    w.flush()
    w.add(0, 1, "k", [timer(100.0)])
    w.flush()
    # What recovery from the changelog gives back: JSON, with string bucket keys.
    state.data = json.loads(json.dumps(state.data))
    recovered = windows(state)
    recovered.add(0, 2, "k", [timer(0.0)])
    (closed,) = recovered.close([0], now_ns=T + 10 * NS)
    assert closed.rows[0][7:11] == [4, 201.0, 0.0, 100.0]
    assert closed.rows[0][12] == {sketch.ZERO: 1, sketch.bucket(1.0): 1, sketch.bucket(100.0): 2}


def test_deltas_left_behind_by_a_crash_while_staging_are_not_emitted_again() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1), gauge(T, 5)])
    w.flush()
    w.add(0, 2, "k", [("db", TIMER, "ms", {}, T, 3.0, 3.0)])
    (closed,) = w.close([0], now_ns=T + 10 * NS)
    # Record 2's points went to no delta: the window closes with them, into its emission.
    assert closed.keys == [f"0|{T // NS}|@d|1|0"] and closed.offset == 2
    assert state.data["0|@applied"] == [1]  # record 2's marker waits for the emission
    # The crash: the emission made it to the changelog, the delete and the marker did not.
    state.put(0, f"0|@out|{T // NS}|2|0", [0, 1, closed.rows])
    state.put(0, "0|@seq", [0])
    recovered = windows(state)
    recovered.add(0, 2, "k", [("db", TIMER, "ms", {}, T, 3.0, 3.0)])  # read again: emitted, skipped
    recovered.add(0, 3, "k", [counter(T + 1, 10)])  # a late point after the restart
    assert f"0|{T // NS}|@d|1|0" not in state.data  # the stale delta was deleted on reading
    (again,) = recovered.close([0], now_ns=T + 10 * NS)
    assert [r[7:9] for r in again.rows] == [[1, 10.0]] and again.offset == 3
    recovered.stage(again)
    assert [(o.offset, len(o.rows)) for o in recovered.outbox([0])] == [(2, 3), (3, 1)]
    assert recovered.open_windows([0]) == {}


def test_no_window_closes_while_a_flush_is_half_written() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1)])
    w.flush()
    w.add(0, 2, "k", [counter(T, 2), gauge(T + NS, 7)])
    w.flush()
    # The crash kept the first window's delta of offset 2, not the second's nor the marker.
    state.data["0|@applied"] = [1]
    del state.data[f"0|{T // NS + 1}|@d|2|0"]
    recovered = windows(state)
    assert recovered.close([0], now_ns=T + 10 * NS) == []
    assert recovered.add(0, 2, "k", [counter(T, 2), gauge(T + NS, 7)])  # read again
    closed = recovered.close([0], now_ns=T + 10 * NS)
    assert [(c.start, [(r[1], r[7], r[8]) for r in c.rows]) for c in closed] == [
        (T // NS, [("requests", 2, 3.0)]), (T // NS + 1, [("cpu", 1, 7.0)])
    ]


def test_a_long_window_s_deltas_are_compacted_into_a_snapshot() -> None:
    state = DictState()
    w = TumblingWindows(state, size=60, lateness=1, idle_close=1)
    m0 = T // NS // 60 * 60
    for offset in range(300):  # one batch per record: a delta each
        w.add(0, offset, "k", [counter(m0 * NS + offset, 1, host=f"h{offset % 10}")])
        w.flush()
    keys = [k for k in state.data if "|@" in k and not k.endswith("@applied")]
    assert len(keys) < 70 and any("|@s|" in k for k in keys)  # not 300 deltas
    state.data = json.loads(json.dumps(state.data))
    recovered = TumblingWindows(state, size=60, lateness=1, idle_close=1)
    (closed,) = recovered.close([0], now_ns=m0 * NS, force=True)
    assert len(closed.rows) == 10 and {r[7] for r in closed.rows} == {30} and closed.offset == 299
    recovered.stage(closed)
    assert sorted(state.data) == ["0|@applied", f"0|@out|{m0}|299|0", "0|@seq"]


def test_forget_reads_the_windows_back_from_the_state() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1), gauge(T + NS, 3)])
    w.forget()  # before the flush: the points are gone, and their record is not marked applied
    assert w.close([0], now_ns=T + 10 * NS) == []
    assert w.add(0, 1, "k", [counter(T, 1), gauge(T + NS, 3)])  # applied again
    w.flush()
    before = w.close([0], now_ns=T + 10 * NS)
    assert [len(c.rows) for c in before] == [1, 1]  # the counter's window and the gauge's
    w.forget()
    assert w.open_windows([0]) == {}  # nothing in memory until the partition is used
    assert w.close([0], now_ns=T + 10 * NS) == before
    stored = copy.deepcopy(state.data)
    assert not w.add(0, 1, "k", [counter(T, 1)]) and not w.add(0, 0, "k", [counter(T, 1)])  # applied: skipped
    w.flush()
    assert state.data == stored and w.close([0], now_ns=T + 10 * NS) == before  # nothing changed


def test_entries_are_chunked_and_an_incomplete_one_counts_as_never_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sluice.streams.windows.CHUNK_ROWS", 2)
    state = DictState()
    w = windows(state)
    five = [counter(T, 1, host=f"h{i}") for i in range(5)]
    w.add(0, 1, "k", five)
    w.flush()
    assert sorted(k for k in state.data if "@d" in k) == [f"0|{T // NS}|@d|1|{i}" for i in range(3)]
    w.add(0, 2, "k", five)
    w.flush()
    # The crash kept two of the three chunks of offset 2's delta, not the marker.
    state.data["0|@applied"] = [1]
    del state.data[f"0|{T // NS}|@d|2|1"]
    recovered = windows(state)
    assert recovered.add(0, 2, "k", five)  # not covered: the delta was never complete
    assert not any(k.startswith(f"0|{T // NS}|@d|2|") for k in state.data)
    (closed,) = recovered.close([0], now_ns=T + 10 * NS)
    assert sorted((r[6]["host"], r[7]) for r in closed.rows) == [(f"h{i}", 2) for i in range(5)]
    before = copy.deepcopy(state.data)
    recovered.stage(closed)
    emission = sorted(k for k in state.data if "@out" in k)
    assert len(emission) == 3
    # A crash that kept one chunk of the emission, none of the deletes and not the marker:
    # the chunk is gone on reading, and record 2 (whose points only the emission had) is read
    # again, which makes the window whole.
    state.data = {**before, emission[0]: state.data[emission[0]]}
    assert state.data["0|@applied"] == [1]
    reread = windows(state)
    assert reread.add(0, 2, "k", five)
    assert emission[0] not in state.data
    again = reread.close([0], now_ns=T + 10 * NS)
    assert [sorted((r[6]["host"], r[7]) for r in c.rows) for c in again] == [[(f"h{i}", 2) for i in range(5)]]


def test_chunks_are_cut_by_size_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sluice.streams.windows.CHUNK_BYTES", 1100)  # rows of about 720 and 300
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1, host=f"h{i}", big="x" * 400) for i in range(3)] + [counter(T, 1)])
    w.flush()
    chunks = [state.data[k] for k in sorted(state.data) if "@d" in k]
    assert [(n, len(rows)) for n, rows in chunks] == [(3, 1), (3, 1), (3, 2)]


def test_a_series_rows_are_cut_by_the_same_size_in_every_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sluice.streams.windows.CHUNK_BYTES", 1100)  # rows of about 720 and 300
    state = DictState()
    w = windows(state)
    for offset, ts in ((1, T), (2, T + NS)):  # the second window's rows are sized as the first's were
        w.add(0, offset, "k", [counter(ts, 1, host=f"h{i}", big="x" * 400) for i in range(3)] + [counter(ts, 1)])
        w.flush()
    for start in (T // NS, T // NS + 1):
        chunks = [state.data[k] for k in sorted(state.data) if k.startswith(f"0|{start}|@d")]
        assert [(n, len(rows)) for n, rows in chunks] == [(3, 1), (3, 1), (3, 2)]


def test_windows_staged_together_form_one_group_per_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    state = DictState()
    w = windows(state)
    for second in range(4):
        w.add(0, second, "k", [counter(T + second * NS, 1), counter(T + second * NS, 1, host="b")])
    w.add(1, 0, "k", [counter(T, 5)])
    monkeypatch.setattr(windows_module, "GROUP_ROWS", 5)  # two windows of two rows fit, a third does not
    w.stage_all(w.close([0, 1], now_ns=T + 100 * NS))
    staged = w.outbox([0, 1])
    assert [(o.partition, o.seq, o.group) for o in staged] == [(0, 0, 0), (0, 1, 0), (0, 2, 2), (0, 3, 2), (1, 0, 0)]
    # The group is stored with each emission, and read back from the changelog's JSON.
    state.data = json.loads(json.dumps(state.data))
    assert [(o.partition, o.seq, o.group) for o in windows(state).outbox([0, 1])] == [
        (o.partition, o.seq, o.group) for o in staged
    ]
    # Entries written before groups existed ([seq, chunks, rows]) are groups of one.
    key = staged[1].keys[0]
    seq, _, chunks, rows = state.data[key]
    state.data[key] = [seq, chunks, rows]
    assert [o.group for o in windows(state).outbox([0])] == [0, 1, 2, 2]


def test_a_lost_seq_marker_does_not_reuse_an_emission_number() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 0, "k", [counter(T, 1)])
    w.stage_all(w.close([0], now_ns=T + 100 * NS))
    # A crash cut the flush after the emission and before the "@seq" written after it.
    del state.data["0|@seq"]
    recovered = windows(state)
    recovered.add(0, 1, "k", [counter(T + 10 * NS, 1)])
    recovered.stage_all(recovered.close([0], now_ns=T + 100 * NS))
    assert [(o.offset, o.seq, o.group) for o in recovered.outbox([0])] == [(0, 0, 0), (1, 1, 1)]


def test_a_group_must_name_an_emission_of_its_partition() -> None:
    w = windows()
    w.add(0, 0, "k", [counter(T, 1)])
    (closed,) = w.close([0], now_ns=T + 100 * NS)
    with pytest.raises(ValueError, match="group 5 is not an emission of partition 0"):
        w.stage(closed, group=5)


def test_a_window_closing_with_its_newest_points_writes_them_once_then_the_marker() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1)])
    w.flush()
    del state.writes[:]
    w.add(0, 2, "k", [counter(T + 1, 2), counter(T + 5 * NS, 4)])
    closed = w.close([0], now_ns=T)  # the clock (T + 5s) closes the first window only
    assert [c.start for c in closed] == [T // NS]
    # Only the window that stays open gets a delta; the marker waits.
    assert [key for _, key, _ in state.writes] == [f"0|{T // NS + 5}|@d|2|0"]
    w.stage_all(closed)
    assert [(key, value) for _, key, value in state.writes[1:]] == [
        (f"0|@out|{T // NS}|2|0", [0, 0, 1, closed[0].rows]),
        ("0|@seq", [0]),
        (f"0|{T // NS}|@d|1|0", None),
        ("0|@applied", [2]),
    ]
    assert closed[0].rows[0][7:9] == [2, 3.0]


def test_a_closed_window_never_staged_is_written_by_the_next_flush() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 1, "k", [counter(T, 1), counter(T + 5 * NS, 1)])
    (closed,) = w.close([0], now_ns=T)
    assert "0|@applied" not in state.data
    w.flush()  # the caller did not stage it: its points are written after all, then the marker
    assert [key for _, key, _ in state.writes] == [f"0|{T // NS + 5}|@d|1|0", f"0|{T // NS}|@s|1|0", "0|@applied"]
    assert [(c.start, [r[7:9] for r in c.rows]) for c in windows(state).close([0], now_ns=T + 10 * NS)] == [
        (T // NS, [[1, 1.0]]), (T // NS + 5, [[1, 1.0]])
    ]


def test_an_emission_read_back_without_its_marker_keeps_covering_its_points_once_stored() -> None:
    state = DictState()
    w = windows(state)
    w.add(0, 0, "k", [counter(T, 1)])
    w.add(0, 1, "k", [counter(T + 1, 2)])
    w.stage_all(w.close([0], now_ns=T + 10 * NS))
    # The crash cut the flush after the emission and before its marker.
    del state.data["0|@applied"]
    recovered = windows(state)
    (emission,) = recovered.outbox([0])
    recovered.done(emission)  # a tick stores it before the records are read again
    assert recovered.outbox([0]) == [] and emission.keys[0] in state.data
    for offset, delta in ((0, 1), (1, 2)):  # read again: their points are in the emission
        recovered.add(0, offset, "k", [counter(T + offset, delta)])
    assert recovered.close([0], now_ns=T + 10 * NS) == []
    assert state.data["0|@applied"] == [1] and emission.keys[0] not in state.data  # the marker covers it now
