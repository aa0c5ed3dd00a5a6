"""The gateway's /metrics names no access key unless metrics_key_labels is on."""

from __future__ import annotations

import urllib.request

import grpc
from prometheus_client import Counter, generate_latest

from sluice.ingress.metrics import GatewayMetrics


def fill(metrics: GatewayMetrics) -> None:
    metrics.received.labels("ak_secret_one", "Send").inc(3)
    metrics.received.labels("ak_secret_two", "Send").inc(4)
    metrics.received.labels("ak_secret_two", "Sender").inc(5)
    metrics.reject_envelopes("ak_secret_one", "Send", grpc.StatusCode.INVALID_ARGUMENT, 2)
    metrics.publish_seconds.observe(0.003)


def test_off_no_key_is_named_and_per_key_series_are_summed() -> None:
    metrics = GatewayMetrics()
    fill(metrics)
    # A counter with a key label added later, as other parts of the gateway do, complies as well.
    added = Counter("sluice_gateway_new_things", "per key", ["access_key", "why"], registry=metrics.registry)
    added.labels("ak_secret_three", "x").inc()
    text = generate_latest(metrics.exposed()).decode()
    assert "ak_secret" not in text and "access_key" not in text
    assert 'sluice_gateway_received_envelopes_total{entry_point="Send"} 7.0\n' in text
    assert 'sluice_gateway_received_envelopes_total{entry_point="Sender"} 5.0\n' in text
    assert 'sluice_gateway_rejected_envelopes_total{code="INVALID_ARGUMENT",entry_point="Send"} 2.0\n' in text
    assert 'sluice_gateway_new_things_total{why="x"} 1.0\n' in text
    assert 'sluice_gateway_kafka_publish_seconds_count 1.0\n' in text


def test_on_keys_are_labels() -> None:
    metrics = GatewayMetrics(key_labels=True)
    fill(metrics)
    text = generate_latest(metrics.exposed()).decode()
    assert 'sluice_gateway_received_envelopes_total{access_key="ak_secret_two",entry_point="Send"} 4.0\n' in text
    assert 'sluice_gateway_received_envelopes_total{access_key="ak_secret_one",entry_point="Send"} 3.0\n' in text


def test_served_over_http_without_keys_also_when_names_are_asked_for() -> None:
    metrics = GatewayMetrics()
    fill(metrics)
    port = metrics.serve("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(base) as r:
            text = r.read().decode()
        with urllib.request.urlopen(base + "?name[]=sluice_gateway_received_envelopes_total") as r:
            only = r.read().decode()
    finally:
        metrics.close()
    assert "ak_secret" not in text and 'sluice_gateway_received_envelopes_total{entry_point="Send"} 7.0' in text
    assert "ak_secret" not in only and 'sluice_gateway_received_envelopes_total{entry_point="Send"} 7.0' in only
    assert "rejected" not in only
