"""The worker's /metrics names no access key unless metrics_key_labels is on."""

from __future__ import annotations

from typing import Any

from sluice.streams.prometheus import render

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
    assert "sluice_worker_throttle_passed_total 7\n" in text
    assert "sluice_worker_throttle_dropped_total 4\n" in text
    assert "sluice_worker_late_points_total 3\n" in text
    assert "sluice_worker_out_of_bounds_total 1\n" in text
    assert 'sluice_worker_position{partition="0"} 7\n' in text


def test_on_keys_are_labels() -> None:
    text = render(STATUS, key_labels=True)
    assert 'sluice_worker_late_points_total{access_key="ak_secret_one"} 2\n' in text
    assert 'sluice_worker_throttle_dropped_total{access_key="ak_secret_two"} 3\n' in text
