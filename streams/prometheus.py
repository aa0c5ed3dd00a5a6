"""The worker's ``/metrics``: a ``prometheus_client`` collector over the worker's status.

Unless ``metrics_key_labels`` is on, no sample names an access key: a family's ``access_key``
label is dropped and the samples it alone told apart are summed (:mod:`sluice.key_labels`, as on
the gateway's ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

from sluice.key_labels import KEY_LABEL, WithoutKeys

_PREFIX = "sluice_worker_"

Samples = list[tuple[dict[str, object], float]]


def _family(name: str, kind: str, help: str, samples: Samples) -> Metric:
    """A family named ``sluice_worker_<name>``; a counter's samples take the ``_total`` suffix."""
    family = Metric(_PREFIX + name, help, kind)
    sample_name = family.name + "_total" if kind == "counter" else family.name
    for labels, value in samples:
        family.add_sample(sample_name, {k: str(v) for k, v in labels.items()}, value)
    return family


class WorkerCollector:
    """Counters and gauges of a worker's status (see ``Worker.status``), read at each collection."""

    def __init__(self, status: Callable[[], Mapping[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        for name, value in sorted(status["counters"].items()):
            yield _family(name, "counter", f"pipeline counter {name}", [({}, value)])
        yield _family(
            "rows_written", "counter", "rows written to ClickHouse",
            [({"table": t}, n) for t, n in sorted(status["rows_written"].items())],
        )
        yield _family("file_lines_written", "counter", "lines written to files", [({}, status["file_lines_written"])])
        yield _family("file_rotations", "counter", "files rotated", [({}, status["file_rotations"])])
        yield _family("seeks", "counter", "times records were read again after a gap", [({}, status["seeks"])])
        yield _family(
            "clickhouse_retries", "counter", "ClickHouse inserts retried", [({}, status["clickhouse_retries"])]
        )
        for what in ("passed", "dropped", "sampled"):
            yield _family(
                f"throttle_{what}", "counter", f"logs and events {what} by the throttler, per access key",
                [({KEY_LABEL: k}, s[what]) for k, s in sorted(status["throttle"].items())],
            )
        yield _family(
            "late_points", "counter", "metric points dropped as later than max_lateness, per access key",
            [({KEY_LABEL: k}, n) for k, n in sorted(status["late"].items())],
        )
        yield _family(
            "open_windows", "gauge", "windows open in the state",
            [({"table": t}, n) for t, n in sorted(status["open_windows"].items())],
        )
        yield _family(
            "position", "gauge", "highest source offset with durable outputs, per partition",
            [({"partition": p}, o) for p, o in sorted(status["positions"].items())],
        )


def render(status: Mapping[str, Any], *, key_labels: bool = False) -> str:
    """The Prometheus text page of a worker status; access keys are named only with
    ``key_labels`` (``metrics_key_labels``)."""
    collector = WorkerCollector(lambda: status)
    return generate_latest(collector if key_labels else WithoutKeys(collector)).decode()
