"""Counter totals of the pipeline flattened to named series: ``stage.name{label=value,...}``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

_GATEWAY_PREFIX = "sluice_gateway_"


def series_name(stage: str, name: str, labels: Mapping[str, str] | None = None) -> str:
    """``stage.name`` with its labels, sorted, in braces when there are any."""
    inner = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))
    return f"{stage}.{name}{{{inner}}}" if inner else f"{stage}.{name}"


def labels_of(series: str) -> dict[str, str]:
    """The labels of a series name (label values hold no ``,`` or ``=``: keys, codes, reasons)."""
    _, brace, inner = series.partition("{")
    if not brace or not inner.rstrip("}"):
        return {}
    return dict(pair.split("=", 1) for pair in inner.rstrip("}").split(","))


def base_of(series: str) -> str:
    """The series name without its labels."""
    return series.partition("{")[0]


def worker_totals(status: Mapping[str, Any]) -> dict[str, float]:
    """The worker's counters (see ``Worker.status``) as series."""
    totals: dict[str, float] = {}
    for name, value in status["counters"].items():
        totals[series_name("worker", name)] = value
    for table, rows in status["rows_written"].items():
        totals[series_name("worker", "rows_written", {"table": table})] = rows
    totals[series_name("worker", "file_lines_written")] = status["file_lines_written"]
    totals[series_name("worker", "clickhouse_retries")] = status["clickhouse_retries"]
    for key, stats in status["throttle"].items():
        for what, n in stats.items():
            totals[series_name("worker", f"throttle_{what}", {"access_key": key})] = n
    for key, n in status["late"].items():
        totals[series_name("worker", "late_points", {"access_key": key})] = n
    return totals


def gateway_totals(text: str) -> dict[str, float]:
    """The counters of a gateway's Prometheus page as series (``gateway.received_envelopes{...}``)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter" or not family.name.startswith(_GATEWAY_PREFIX):
            continue
        short = family.name[len(_GATEWAY_PREFIX):]
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[series_name("gateway", short, sample.labels)] = sample.value
    return totals


def of_key(names: Iterable[str], key: str) -> list[str]:
    """The series of one access key."""
    return [n for n in names if labels_of(n).get("access_key") == key]


def without_keys(totals: Mapping[str, float]) -> dict[str, float]:
    """The series summed over their ``access_key`` label: the pipeline's view, one series per stage
    and reason however many keys there are."""
    out: dict[str, float] = {}
    for name, value in totals.items():
        labels = labels_of(name)
        if "access_key" in labels:
            del labels["access_key"]
            stage, _, short = base_of(name).partition(".")
            name = series_name(stage, short, labels)
        out[name] = out.get(name, 0.0) + value
    return out


def of_keys(totals: Mapping[str, float]) -> dict[str, float]:
    """Only the series of one access key each."""
    return {n: v for n, v in totals.items() if "access_key=" in n}
