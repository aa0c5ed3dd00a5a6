"""OTLP → envelopes: attribute values, temporality, histograms of both kinds, summaries."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from sluice.ingress.protocols.otlp import any_value, metrics_groups

DELTA, CUMULATIVE = m.AGGREGATION_TEMPORALITY_DELTA, m.AGGREGATION_TEMPORALITY_CUMULATIVE


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def test_attribute_values_as_tag_values() -> None:
    assert [any_value(v) for v in (
        AnyValue(string_value="s"), AnyValue(bool_value=False), AnyValue(int_value=-7), AnyValue(double_value=0.5),
        AnyValue(bytes_value=b"\x01\xff"), AnyValue(),
        AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="a")])),
        AnyValue(kvlist_value=KeyValueList(values=[kv("k", "v")])),
    )] == ["s", "false", "-7", "0.5", "01ff", "", '["1","a"]', '{"k":"v"}']


def convert(*metrics: m.Metric) -> list[list[dict[str, object]]]:
    request = m.ResourceMetrics(
        resource=Resource(attributes=[kv("service.name", "svc"), kv("r", "1")]),
        scope_metrics=[m.ScopeMetrics(scope=InstrumentationScope(name="lib"), metrics=list(metrics))],
    )
    return [[MessageToDict(e) for e in group] for group in metrics_groups([request])]


TAGS = {"service.name": "svc", "r": "1", "otel.scope.name": "lib"}


def test_sums_are_counters_only_when_monotonic_delta_integers() -> None:
    def point(**value: object) -> m.NumberDataPoint:
        return m.NumberDataPoint(time_unix_nano=5, attributes=[kv("r", "2")], **value)  # type: ignore[arg-type]

    groups = convert(
        m.Metric(name="a", sum=m.Sum(aggregation_temporality=DELTA, is_monotonic=True, data_points=[point(as_int=4)])),
        m.Metric(name="b", unit="s", sum=m.Sum(aggregation_temporality=DELTA, is_monotonic=True, data_points=[point(as_double=1.5)])),
        m.Metric(name="c", sum=m.Sum(aggregation_temporality=CUMULATIVE, is_monotonic=True, data_points=[point(as_int=9)])),
        m.Metric(name="d", sum=m.Sum(aggregation_temporality=DELTA, is_monotonic=False, data_points=[point(as_int=-2)])),
    )
    base = {"timestamp": "5", "sourceId": "svc", "tags": {**TAGS, "r": "2"}}
    assert groups == [
        [{**base, "counter": {"name": "a", "delta": "4"}}],
        [{**base, "gauge": {"metrics": {"b": {"unit": "s", "value": 1.5}}}}],
        [{**base, "gauge": {"metrics": {"c": {"value": 9.0}}}}],
        [{**base, "gauge": {"metrics": {"d": {"value": -2.0}}}}],
    ]


def names_and_values(group: list[dict[str, object]]) -> list[tuple[str, str, float]]:
    out = []
    for env in group:
        tags = env["tags"]
        assert isinstance(tags, dict)
        le = tags.get("le", tags.get("quantile", ""))
        if "counter" in env:
            c = env["counter"]
            assert isinstance(c, dict)
            out.append((c["name"], le, float(c.get("delta", 0))))
        else:
            g = env["gauge"]
            assert isinstance(g, dict)
            ((name, value),) = g["metrics"].items()
            out.append((name, le, value.get("value", 0.0)))
    return out


def test_cumulative_histogram_buckets_become_cumulative_gauges() -> None:
    point = m.HistogramDataPoint(time_unix_nano=1, count=6, sum=30.0, bucket_counts=[1, 2, 3], explicit_bounds=[0.5, 10])
    (group,) = convert(m.Metric(name="h", histogram=m.Histogram(aggregation_temporality=CUMULATIVE, data_points=[point])))
    assert names_and_values(group) == [
        ("h.count", "", 6.0), ("h.bucket", "0.5", 1.0), ("h.bucket", "10", 3.0), ("h.bucket", "+Inf", 6.0), ("h.sum", "", 30.0),
    ]
    assert all("gauge" in env for env in group)


def test_exponential_histogram_buckets_are_tagged_with_their_upper_bound() -> None:
    point = m.ExponentialHistogramDataPoint(
        time_unix_nano=1, count=7, sum=12.0, scale=1, zero_count=1,
        positive=m.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[2, 0, 3]),
        negative=m.ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[1]),
    )
    metric = m.Metric(name="e", exponential_histogram=m.ExponentialHistogram(aggregation_temporality=DELTA, data_points=[point]))
    (group,) = convert(metric)
    # scale 1: base sqrt(2); positive bucket i is (base**i, base**(i+1)], negative i is [-base**(i+1), -base**i)
    assert names_and_values(group) == [
        ("e.count", "", 7.0), ("e.bucket", "0", 1.0), ("e.bucket", "1.41421", 2.0), ("e.bucket", "2.82843", 3.0),
        ("e.bucket", "-1.41421", 1.0), ("e.sum", "", 12.0),
    ]


def test_summary_quantiles() -> None:
    point = m.SummaryDataPoint(time_unix_nano=1, count=4, sum=10.0, quantile_values=[
        m.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=2.0), m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=4.0),
    ])
    (group,) = convert(m.Metric(name="s", summary=m.Summary(data_points=[point])))
    assert names_and_values(group) == [("s.count", "", 4.0), ("s.sum", "", 10.0), ("s", "0.5", 2.0), ("s", "0.99", 4.0)]
