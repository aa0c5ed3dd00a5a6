"""Prometheus metrics without the ``access_key`` label, for the gateway's and the worker's
``/metrics`` alike: unless ``metrics_key_labels`` is on, no sample names an access key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

KEY_LABEL = "access_key"


def without_key_label(families: Iterable[Metric]) -> Iterator[Metric]:
    """``families`` with the ``access_key`` label dropped and the series it alone told apart summed
    (every per-key metric adds up: counts, bytes, histograms' buckets and sums)."""
    for family in families:
        if not any(KEY_LABEL in sample.labels for sample in family.samples):
            yield family
            continue
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for sample in family.samples:
            labels = tuple((k, v) for k, v in sample.labels.items() if k != KEY_LABEL)
            merged[sample.name, labels] = merged.get((sample.name, labels), 0.0) + sample.value
        out = Metric(family.name, family.documentation, family.type, family.unit)
        for (name, labels), value in merged.items():
            out.add_sample(name, dict(labels), value)
        yield out


class WithoutKeys:
    """A collector serving another collector's metrics :func:`without_key_label`."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        return without_key_label(self._collector.collect())

