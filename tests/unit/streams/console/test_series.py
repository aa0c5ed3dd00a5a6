"""Worker and gateway counters as the console's named series."""

from __future__ import annotations

from prometheus_client import generate_latest

from sluice.ingress.metrics import GatewayMetrics
from sluice.streams.console.data import gateway_metrics_url
from sluice.streams.console.series import (
    base_of, gateway_totals, labels_of, of_key, of_keys, series_name, without_keys, worker_totals,
)


def test_worker_status_as_series() -> None:
    status = {
        "counters": {"envelopes": 12, "queries_ok": 2},
        "rows_written": {"logs": 10},
        "file_lines_written": 11,
        "clickhouse_retries": 1,
        "throttle": {"ak_a": {"passed": 3, "dropped": 2, "sampled": 0}},
        "late": {"ak_b": 4},
    }
    assert worker_totals(status) == {
        "worker.envelopes": 12, "worker.queries_ok": 2, "worker.rows_written{table=logs}": 10,
        "worker.file_lines_written": 11, "worker.clickhouse_retries": 1,
        "worker.throttle_passed{access_key=ak_a}": 3, "worker.throttle_dropped{access_key=ak_a}": 2,
        "worker.throttle_sampled{access_key=ak_a}": 0, "worker.late_points{access_key=ak_b}": 4,
    }


def test_the_gateway_s_own_prometheus_page_as_series() -> None:
    metrics = GatewayMetrics()
    metrics.received.labels("ak_a", "grpc").inc(5)
    metrics.acknowledged.labels("ak_a").inc(4)
    metrics.rejected.labels("ak_a", "grpc", "RESOURCE_EXHAUSTED").inc(1)
    metrics.publish_seconds.observe(0.01)  # a histogram: not a series
    totals = gateway_totals(generate_latest(metrics.registry).decode())
    assert {k: v for k, v in totals.items() if v} == {
        "gateway.received_envelopes{access_key=ak_a,entry_point=grpc}": 5.0,
        "gateway.acknowledged_envelopes{access_key=ak_a}": 4.0,
        "gateway.rejected_envelopes{access_key=ak_a,code=RESOURCE_EXHAUSTED,entry_point=grpc}": 1.0,
    }
    assert of_key(totals, "ak_b") == []
    assert len(of_key(totals, "ak_a")) == 3


def test_names_and_labels() -> None:
    name = series_name("gateway", "dropped", {"reason": "full", "access_key": "ak"})
    assert name == "gateway.dropped{access_key=ak,reason=full}"
    assert labels_of(name) == {"access_key": "ak", "reason": "full"}
    assert base_of(name) == "gateway.dropped"
    assert labels_of("worker.envelopes") == {} and series_name("worker", "envelopes") == "worker.envelopes"


def test_the_gateway_metrics_address_from_its_listen_setting() -> None:
    assert gateway_metrics_url("127.0.0.1:9464") == "http://127.0.0.1:9464/metrics"
    assert gateway_metrics_url("0.0.0.0:9464") == "http://127.0.0.1:9464/metrics"
    assert gateway_metrics_url("127.0.0.1:0") is None
    assert gateway_metrics_url("") is None


def test_the_pipeline_sums_over_keys_and_tenants_keep_only_keyed_series() -> None:
    totals = {
        "gateway.acknowledged_envelopes{access_key=a}": 3.0,
        "gateway.acknowledged_envelopes{access_key=b}": 4.0,
        "gateway.dropped_envelopes{access_key=a,policy=drop,reason=full}": 1.0,
        "gateway.dropped_envelopes{access_key=b,policy=drop,reason=full}": 2.0,
        "worker.envelopes": 7.0,
    }
    assert without_keys(totals) == {
        "gateway.acknowledged_envelopes": 7.0,
        "gateway.dropped_envelopes{policy=drop,reason=full}": 3.0,
        "worker.envelopes": 7.0,
    }
    assert of_keys(totals) == {k: v for k, v in totals.items() if k != "worker.envelopes"}
