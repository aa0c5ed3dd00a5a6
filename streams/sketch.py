"""A mergeable quantile sketch of timer durations (DDSketch's log buckets, relative error 1%).

A value ``v > 0`` falls into bucket ``i = ceil(log(v) / log(GAMMA))``, which covers
``(GAMMA**(i-1), GAMMA**i]``; the bucket is represented by ``2 * GAMMA**i / (GAMMA + 1)``, at
most ``RELATIVE_ERROR`` away (relatively) from every value in it. Values at or below
``MIN_VALUE`` (and negative ones) are counted in the ``ZERO`` bucket and represented by 0.

A sketch is a map ``bucket -> count``: partials merge by adding counts, which is exactly what
ClickHouse's ``sumMap`` does to the ``sketch`` column, so partial windows from several
shards, workers or late corrections give the same quantiles as one sketch of all values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ERROR = 0.01
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
MIN_VALUE = 1e-9
ZERO = -(2**31)  # the smallest Int32: sorts first, like the values it stands for

Sketch = dict[int, int]


def bucket(value: float) -> int:
    """The bucket of ``value``."""
    if not value > MIN_VALUE:  # also NaN
        return ZERO
    return math.ceil(math.log(value) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The value that represents bucket ``index``."""
    if index == ZERO:
        return 0.0
    return 2 * GAMMA**index / (GAMMA + 1)


def add(sketch: Sketch, value: float, count: int = 1) -> None:
    """Count ``value`` into ``sketch``."""
    i = bucket(value)
    sketch[i] = sketch.get(i, 0) + count


def merge(into: Sketch, other: Mapping[int | str, int]) -> Sketch:
    """Add ``other``'s counts to ``into`` (keys may be strings, as JSON gives them back)."""
    for i, n in other.items():
        k = int(i)
        into[k] = into.get(k, 0) + int(n)
    return into


def normalized(sketch: Mapping[int | str, int]) -> Sketch:
    """A copy with integer bucket keys."""
    return merge({}, sketch)


def quantiles(sketch: Mapping[int | str, int], qs: Iterable[float]) -> list[float | None]:
    """The values at quantiles ``qs`` (each in [0, 1]); None for an empty sketch.

    For n values sorted as x_0 <= ... <= x_(n-1), quantile q estimates x_k with
    k = floor(q * (n - 1)), within a relative error of RELATIVE_ERROR.
    """
    items = sorted(normalized(sketch).items())
    total = sum(n for _, n in items)
    out: list[float | None] = []
    for q in qs:
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile must be in [0, 1], got {q}")
        if total == 0:
            out.append(None)
            continue
        rank = math.floor(q * (total - 1))
        seen = 0
        for index, n in items:
            seen += n
            if seen > rank:
                out.append(bucket_value(index))
                break
    return out
