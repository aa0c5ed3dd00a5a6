"""The console's counter history: rates per second between samples."""

from __future__ import annotations

from sluice.streams.console.history import History


def test_rates_between_samples_with_gaps_for_unanswered_sources_and_resets() -> None:
    h = History(keep=10, min_interval=0.9)
    assert h.rates() == {"start": None, "t": [], "rates": {}}
    assert h.record(100.0, {"w.a": 0})  # the gateway did not answer
    assert not h.record(100.5, {"w.a": 7})  # too soon: not kept
    assert h.record(101.0, {"w.a": 10, "g.b": 5})
    assert h.record(103.0, {"w.a": 30, "g.b": 9, "g.c": 4})  # g.c new while g answered: from 0
    assert h.record(104.0, {"w.a": 2, "g.b": 9, "g.c": 6})  # w.a went down: a restart
    assert h.record(105.0, {"w.a": 3})  # the gateway did not answer
    assert h.rates() == {
        "start": 100.0, "t": [101.0, 103.0, 104.0, 105.0],
        "rates": {"g.b": [None, 2.0, 0.0, None], "g.c": [None, 2.0, 2.0, None], "w.a": [10.0, 10.0, None, 1.0]},
    }
    assert h.rates({"g.b"})["rates"] == {"g.b": [None, 2.0, 0.0, None]}
    assert h.record(106.0, {}, {"w", "g"})  # both answered, with no series yet
    assert h.record(107.0, {"g.d": 3}, {"w", "g"})
    assert h.rates({"g.d"})["rates"] == {"g.d": [None, None, None, None, None, 3.0]}
    assert h.latest() == {"g.d": 3}


def test_only_the_newest_samples_are_kept() -> None:
    h = History(keep=3, min_interval=0)
    for t in range(6):
        h.record(float(t), {"w.a": t * t})
    assert h.rates() == {"start": 3.0, "t": [4.0, 5.0], "rates": {"w.a": [7.0, 9.0]}}


def test_rates_after_a_time_are_the_intervals_ending_after_it() -> None:
    h = History(keep=10, min_interval=0)
    for t in range(5):
        h.record(float(t), {"w.a": 2 * t})
    assert h.rates(after=2.0) == {"start": 2.0, "t": [3.0, 4.0], "rates": {"w.a": [2.0, 2.0]}}
    assert h.rates(after=4.0) == {"start": 4.0, "t": [], "rates": {"w.a": []}}
    assert h.rates(after=-1.0) == h.rates()
