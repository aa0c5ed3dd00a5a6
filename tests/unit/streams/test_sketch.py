"""The quantile sketch: its stated relative error, merging, edge cases."""

from __future__ import annotations

import math
import random

import pytest

from sluice.streams import sketch


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


@pytest.mark.parametrize("seed", range(5))
def test_quantiles_are_within_the_relative_error(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(3, 2) for _ in range(5000)] + [rng.uniform(1e-6, 1e6) for _ in range(500)]
    s: sketch.Sketch = {}
    for v in values:
        sketch.add(s, v)
    qs = [0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1]
    for q, got in zip(qs, sketch.quantiles(s, qs)):
        want = exact(values, q)
        assert got is not None and abs(got - want) <= sketch.RELATIVE_ERROR * want, (q, got, want)


def test_every_value_is_represented_within_the_relative_error() -> None:
    for v in [1e-8, 0.001, 0.5, 1.0, 1.0000001, 3.3, 1e3, 123456.789, 1e12]:
        r = sketch.bucket_value(sketch.bucket(v))
        assert abs(r - v) <= sketch.RELATIVE_ERROR * v, v


def test_merged_partials_equal_one_sketch_of_all_values() -> None:
    rng = random.Random(7)
    values = [rng.expovariate(0.1) for _ in range(1000)]
    whole: sketch.Sketch = {}
    parts: list[sketch.Sketch] = [{}, {}, {}]
    for i, v in enumerate(values):
        sketch.add(whole, v)
        sketch.add(parts[i % 3], v)
    merged: sketch.Sketch = {}
    for p in parts:
        sketch.merge(merged, {str(k): n for k, n in p.items()})
    assert merged == whole


def test_zero_negative_and_nan_go_to_the_zero_bucket() -> None:
    s: sketch.Sketch = {}
    for v in [0.0, -5.0, float("nan"), 1e-12, 10.0]:
        sketch.add(s, v)
    assert s == {sketch.ZERO: 4, sketch.bucket(10.0): 1}
    assert sketch.quantiles(s, [0, 0.5, 1])[:2] == [0.0, 0.0]
    assert sketch.quantiles({}, [0.5]) == [None]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sketch.quantiles(s, [1.5])
