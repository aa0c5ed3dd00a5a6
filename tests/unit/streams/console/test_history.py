"""The console's counter history: rates per second between samples."""

from __future__ import annotations

from sluice.streams.console.history import History


def test_rates_between_samples_with_gaps_for_absent_and_reset_counters() -> None:
    h = History(keep=4, min_interval=0.9)
    assert h.rates() == {"start": None, "t": [], "rates": {}}
    assert h.record(100.0, {"a": 0})
    assert not h.record(100.5, {"a": 7})  # too soon: not kept
    assert h.record(101.0, {"a": 10, "b": 5})
    assert h.record(103.0, {"a": 30, "b": 9})
    assert h.record(104.0, {"a": 2, "b": 9})  # a went down: a restarted
    assert h.rates() == {
        "start": 100.0, "t": [101.0, 103.0, 104.0],
        "rates": {"a": [10.0, 10.0, None], "b": [None, 2.0, 0.0]},
    }
    assert h.rates({"b"})["rates"] == {"b": [None, 2.0, 0.0]}
    assert h.latest() == {"a": 2, "b": 9}


def test_only_the_newest_samples_are_kept() -> None:
    h = History(keep=3, min_interval=0)
    for t in range(6):
        h.record(float(t), {"a": t * t})
    assert h.rates() == {"start": 3.0, "t": [4.0, 5.0], "rates": {"a": [7.0, 9.0]}}
