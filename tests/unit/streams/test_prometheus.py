"""The worker's /metrics: prometheus_client's text format over the worker's status, naming no
access key unless metrics_key_labels is on."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice.streams.prometheus import WorkerCollector, render

STATUS: dict[str, Any] = {
    "counters": {"records": 3, "out_of_bounds": 1},
    "rows_written": {"logs": 2},
    "file_lines_written": 0, "file_rotations": 0, "seeks": 0, "clickhouse_retries": 0,
    "throttle": {"ak_secret_one": {"passed": 5, "dropped": 1, "sampled": 0},
                 "ak_secret_two": {"passed": 2, "dropped": 3, "sampled": 0}},
    "late": {"ak_secret_one": 2, "ak_secret_two": 1},
    "open_windows": {"metrics_1s": 0},
    "positions": {"0": 7},
}


def test_off_no_key_is_named_and_per_key_samples_are_summed() -> None:
    text = render(STATUS)
    assert "ak_secret" not in text and "access_key" not in text
    assert "sluice_worker_throttle_passed_total 7.0\n" in text
    assert "sluice_worker_throttle_dropped_total 4.0\n" in text
    assert "sluice_worker_late_points_total 3.0\n" in text
    assert "sluice_worker_out_of_bounds_total 1.0\n" in text
    assert 'sluice_worker_position{partition="0"} 7.0\n' in text


def test_on_keys_are_labels() -> None:
    text = render(STATUS, key_labels=True)
    assert 'sluice_worker_late_points_total{access_key="ak_secret_one"} 2.0\n' in text
    assert 'sluice_worker_throttle_dropped_total{access_key="ak_secret_two"} 3.0\n' in text


def test_names_types_and_help_as_dashboards_read_them() -> None:
    text = render(STATUS)
    assert text.startswith(
        "# HELP sluice_worker_out_of_bounds_total pipeline counter out_of_bounds\n"
        "# TYPE sluice_worker_out_of_bounds_total counter\n"
        "sluice_worker_out_of_bounds_total 1.0\n"
    )
    assert (
        "# HELP sluice_worker_open_windows windows open in the state\n"
        "# TYPE sluice_worker_open_windows gauge\n"
        'sluice_worker_open_windows{table="metrics_1s"} 0.0\n'
    ) in text
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types == {
        "sluice_worker_out_of_bounds": "counter", "sluice_worker_records": "counter",
        "sluice_worker_rows_written": "counter", "sluice_worker_file_lines_written": "counter",
        "sluice_worker_file_rotations": "counter", "sluice_worker_seeks": "counter",
        "sluice_worker_clickhouse_retries": "counter", "sluice_worker_throttle_passed": "counter",
        "sluice_worker_throttle_dropped": "counter", "sluice_worker_throttle_sampled": "counter",
        "sluice_worker_late_points": "counter", "sluice_worker_open_windows": "gauge",
        "sluice_worker_position": "gauge",
    }


def test_a_family_with_no_samples_keeps_its_help_and_type() -> None:
    text = render(STATUS | {"late": {}})
    assert (
        "# TYPE sluice_worker_late_points_total counter\n"
        "# HELP sluice_worker_open_windows windows open in the state\n"
    ) in text


def test_the_collector_reads_the_status_at_each_collection() -> None:
    status = dict(STATUS)
    registry = CollectorRegistry()
    registry.register(WorkerCollector(lambda: status))
    assert "sluice_worker_seeks_total 0.0\n" in generate_latest(registry).decode()
    status["seeks"] = 5
    assert "sluice_worker_seeks_total 5.0\n" in generate_latest(registry).decode()
