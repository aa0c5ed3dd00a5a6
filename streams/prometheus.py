"""The worker's ``/status`` in the Prometheus text exposition format (``/metrics``).

Unless ``metrics_key_labels`` is on, no sample names an access key: a family's ``access_key``
label is dropped and the samples it alone told apart are summed, whatever family has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_PREFIX = "sluice_worker_"
KEY_LABEL = "access_key"


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


Samples = list[tuple[dict[str, object], float]]


def _without_keys(samples: Samples) -> Samples:
    merged: dict[tuple[tuple[str, object], ...], float] = {}
    for labels, value in samples:
        rest = tuple((k, v) for k, v in labels.items() if k != KEY_LABEL)
        merged[rest] = merged.get(rest, 0) + value
    return [(dict(labels), value) for labels, value in merged.items()]


def family(name: str, kind: str, help: str, samples: Samples, *, key_labels: bool) -> list[str]:
    """One metric family's lines, without key labels unless ``key_labels``."""
    if not key_labels and any(KEY_LABEL in labels for labels, _ in samples):
        samples = _without_keys(samples)
    lines = [f"# HELP {_PREFIX}{name} {help}", f"# TYPE {_PREFIX}{name} {kind}"]
    for labels, value in samples:
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{_PREFIX}{name}{{{inner}}} {value}" if inner else f"{_PREFIX}{name} {value}")
    return lines


def render(status: Mapping[str, Any], *, key_labels: bool = False) -> str:
    """Counters and gauges of a worker status (see ``Worker.status``); access keys are named only
    with ``key_labels`` (``metrics_key_labels``)."""
    lines: list[str] = []

    def _family(name: str, kind: str, help: str, samples: Samples) -> list[str]:
        return family(name, kind, help, samples, key_labels=key_labels)

    for name, value in sorted(status["counters"].items()):
        lines += _family(f"{name}_total", "counter", f"pipeline counter {name}", [({}, value)])
    lines += _family(
        "rows_written_total", "counter", "rows written to ClickHouse",
        [({"table": t}, n) for t, n in sorted(status["rows_written"].items())],
    )
    lines += _family("file_lines_written_total", "counter", "lines written to files", [({}, status["file_lines_written"])])
    lines += _family("file_rotations_total", "counter", "files rotated", [({}, status["file_rotations"])])
    lines += _family("seeks_total", "counter", "times records were read again after a gap", [({}, status["seeks"])])
    lines += _family("clickhouse_retries_total", "counter", "ClickHouse inserts retried", [({}, status["clickhouse_retries"])])
    for what in ("passed", "dropped", "sampled"):
        lines += _family(
            f"throttle_{what}_total", "counter", f"logs and events {what} by the throttler, per access key",
            [({"access_key": k}, s[what]) for k, s in sorted(status["throttle"].items())],
        )
    lines += _family(
        "late_points_total", "counter", "metric points dropped as later than max_lateness, per access key",
        [({"access_key": k}, n) for k, n in sorted(status["late"].items())],
    )
    lines += _family(
        "open_windows", "gauge", "windows open in the state",
        [({"table": t}, n) for t, n in sorted(status["open_windows"].items())],
    )
    lines += _family(
        "position", "gauge", "highest source offset with durable outputs, per partition",
        [({"partition": p}, o) for p, o in sorted(status["positions"].items())],
    )
    return "\n".join(lines) + "\n"
