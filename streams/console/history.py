"""The last minutes of a set of counters, sampled about once a second, as rates per second.

Series are named ``source.name...`` (see :mod:`sluice.streams.console.series`). A series missing
from a sample in which its source answered had not counted anything yet (Prometheus creates a
labelled series at its first increment): it counts from 0. One whose source did not answer (the
gateway unreachable) has no rate for that interval.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any


class History:
    """Samples of named counter totals at wall-clock times; the rate of each between samples.

    A sample taken less than ``min_interval`` seconds after the previous one is not kept, so
    that several callers sampling at once do not shorten the intervals.
    """

    def __init__(self, keep: int = 300, min_interval: float = 0.9) -> None:
        self._samples: deque[tuple[float, dict[str, float], frozenset[str]]] = deque(maxlen=keep)
        self._min_interval = min_interval

    def record(self, at: float, totals: Mapping[str, float], sources: set[str] | None = None) -> bool:
        """Keep the totals at wall time ``at`` from ``sources`` (those that answered; by default the
        sources of the series given); False when too soon after the previous sample."""
        if self._samples and at - self._samples[-1][0] < self._min_interval:
            return False
        answered = frozenset({n.partition(".")[0] for n in totals} if sources is None else sources)
        self._samples.append((at, dict(totals), answered))
        return True

    def latest(self) -> dict[str, float]:
        """The newest totals (empty before the first sample)."""
        return dict(self._samples[-1][1]) if self._samples else {}

    def rates(self, names: set[str] | None = None, after: float | None = None) -> dict[str, Any]:
        """``{"start": first sample's time, "t": [end times], "rates": {name: [per second, or None]}}``
        over each interval between samples (only those ending after ``after``); None where the
        counter's source did not answer at the interval's start or its end, or the counter went
        down (a restart)."""
        samples = list(self._samples)
        if after is not None:
            first = next((i for i, (t, _, _) in enumerate(samples) if t > after), len(samples))
            samples = samples[max(0, first - 1):]
        times = [t for t, _, _ in samples[1:]]
        wanted = set().union(*(s for _, s, _ in samples)) if names is None else names
        out: dict[str, list[float | None]] = {}
        for name in sorted(wanted):
            source = name.partition(".")[0]
            series: list[float | None] = []
            for (t0, before, answered), (t1, later, _) in zip(samples, samples[1:]):
                a, b = before.get(name, 0.0 if source in answered else None), later.get(name)
                series.append(None if a is None or b is None or b < a else (b - a) / (t1 - t0))
            out[name] = series
        return {"start": samples[0][0] if samples else None, "t": times, "rates": out}
