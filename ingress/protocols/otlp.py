"""OTLP messages → envelopes: one group of envelopes per log record, data point or span.

Resource, scope and item attributes become tags (the item's win over the scope's over the
resource's); ``service.name`` is the source and ``service.instance.id`` the instance. Metrics map
onto counters and gauges, because those are what the windows aggregate:

* a monotonic delta sum of integers is a ``Counter`` (its delta); any other sum (cumulative,
  non-monotonic or double) is a ``Gauge`` of the value: a cumulative total cannot become a delta
  without per-series state in the gateway, and a gauge keeps it exact for ``max(last)`` queries;
* a gauge is a ``Gauge``;
* a histogram is ``<name>.count``, ``<name>.bucket`` per bound tagged ``le`` (cumulative, as
  Prometheus does, ending at ``le=+Inf``), and ``<name>.sum`` / ``.min`` / ``.max`` when set;
  counts are counters for delta temporality and gauges for cumulative;
* an exponential histogram likewise, its buckets tagged with their upper bound ``le`` (not
  cumulative: each bucket's own count; the zero bucket is ``le=0``; empty buckets are left out);
* a summary is ``<name>.count``, ``<name>.sum`` and ``<name>`` tagged ``quantile`` (gauges).

A span is a ``Span`` envelope (ids, name, kind, start/end, status) tagged with its attributes;
its events and links are not kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from sluice.ingress.protocols.lines import INT64_MAX, UINT64_MAX, Malformed
from sluice.v1.envelope_pb2 import Counter, Envelope, Gauge, GaugeValue, Log, Span

Groups = list[list[Envelope]]

_STATS: tuple[Literal["sum", "min", "max"], ...] = ("sum", "min", "max")
# severity_number at or above SEVERITY_NUMBER_ERROR is a stderr-like log.
_SEVERITY_ERROR = 17


def any_value(value: AnyValue) -> str:
    """An attribute value as a tag value: strings as they are, the rest as JSON."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind is None:
        return ""
    return json.dumps(_plain(value), separators=(",", ":"), sort_keys=True)


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return MessageToDict(value).popitem()[1] if kind else None


def attributes(items: Iterable[KeyValue], into: dict[str, str] | None = None) -> dict[str, str]:
    """``key -> value`` of OTLP attributes, added to ``into``."""
    out = {} if into is None else into
    for kv in items:
        out[kv.key] = any_value(kv.value)
    return out


class _Context:
    """Tags, source and instance shared by the items of one resource and scope."""

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        tags = attributes(resource.attributes)
        self.source_id = tags.get("service.name", "")
        self.instance_id = tags.get("service.instance.id", "")
        if scope.name:
            tags["otel.scope.name"] = scope.name
        if scope.version:
            tags["otel.scope.version"] = scope.version
        self.tags = attributes(scope.attributes, tags)

    def envelope(self, timestamp: int, items: Iterable[KeyValue], extra: Mapping[str, str] = {}) -> Envelope:
        if timestamp > INT64_MAX:  # a fixed64 past 2262
            raise Malformed(f"timestamp {timestamp} ns is out of range (after 2262)", reason="timestamp")
        tags = attributes(items, dict(self.tags))
        tags.update(extra)
        return Envelope(timestamp=timestamp, source_id=self.source_id, instance_id=self.instance_id, tags=tags)


def log_groups(resource_logs: Iterable[ResourceLogs]) -> Groups:
    """One ``Log`` envelope per log record (body as text; severity >= ERROR is ``ERR``)."""
    groups: Groups = []
    for rl in resource_logs:
        for sl in rl.scope_logs:
            ctx = _Context(rl.resource, sl.scope)
            for record in sl.log_records:
                extra: dict[str, str] = {}
                if record.severity_text:
                    extra["severity"] = record.severity_text
                if record.trace_id:
                    extra["trace_id"] = record.trace_id.hex()
                if record.span_id:
                    extra["span_id"] = record.span_id.hex()
                env = ctx.envelope(record.time_unix_nano or record.observed_time_unix_nano, record.attributes, extra)
                error = record.severity_number >= _SEVERITY_ERROR
                env.log.CopyFrom(Log(payload=any_value(record.body).encode(), type=Log.ERR if error else Log.OUT))
                groups.append([env])
    return groups


def _gauge(env: Envelope, name: str, value: float, unit: str) -> Envelope:
    env.gauge.CopyFrom(Gauge(metrics={name: GaugeValue(unit=unit, value=value)}))
    return env


def _count(env: Envelope, name: str, value: int, unit: str, delta: bool) -> Envelope:
    if value > UINT64_MAX:  # bucket counts adding up past what a count can be
        raise Malformed(f"{name} {value} does not fit in 64 bits", reason="count")
    if delta:
        env.counter.CopyFrom(Counter(name=name, delta=value))
        return env
    return _gauge(env, name, float(value), unit)


def _number(point: NumberDataPoint) -> float:
    return float(point.as_int) if point.WhichOneof("value") == "as_int" else point.as_double


def _exp_bound(scale: int, index: int) -> float:
    """Upper bound of bucket ``index`` of an exponential histogram: base ** (index + 1), ``inf``
    past the largest float (a scale or offset far outside what SDKs send)."""
    try:
        return math.ldexp(1.0, index + 1) if scale == 0 else 2.0 ** ((index + 1) * 2.0 ** -scale)
    except OverflowError:
        return math.inf


def metric_groups(metric: Metric, ctx: _Context) -> Groups:
    """The envelopes of each data point of one metric."""
    name, unit = metric.name, metric.unit
    kind = metric.WhichOneof("data")
    groups: Groups = []
    if kind == "gauge" or kind == "sum":
        data = metric.gauge if kind == "gauge" else metric.sum
        counts = (
            kind == "sum" and metric.sum.is_monotonic
            and metric.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA
        )
        for p in data.data_points:
            env = ctx.envelope(p.time_unix_nano, p.attributes)
            if counts and p.WhichOneof("value") == "as_int" and p.as_int >= 0:
                groups.append([_count(env, name, p.as_int, unit, True)])
            else:
                groups.append([_gauge(env, name, _number(p), unit)])
    elif kind == "histogram":
        delta = metric.histogram.aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA
        for hp in metric.histogram.data_points:
            ts = hp.time_unix_nano
            group = [_count(ctx.envelope(ts, hp.attributes), f"{name}.count", hp.count, "", delta)]
            running = 0
            bounds = [*(f"{b:g}" for b in hp.explicit_bounds), "+Inf"]
            for le, n in zip(bounds, hp.bucket_counts):
                running += n
                group.append(_count(ctx.envelope(ts, hp.attributes, {"le": le}), f"{name}.bucket", running, "", delta))
            for stat in _STATS:
                if hp.HasField(stat):
                    group.append(_gauge(ctx.envelope(ts, hp.attributes), f"{name}.{stat}", getattr(hp, stat), unit))
            groups.append(group)
    elif kind == "exponential_histogram":
        delta = metric.exponential_histogram.aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA
        for ep in metric.exponential_histogram.data_points:
            ts = ep.time_unix_nano
            group = [_count(ctx.envelope(ts, ep.attributes), f"{name}.count", ep.count, "", delta)]
            buckets: list[tuple[float, int]] = [(0.0, ep.zero_count)] if ep.zero_count else []
            for i, n in enumerate(ep.positive.bucket_counts):
                buckets.append((_exp_bound(ep.scale, ep.positive.offset + i), n))
            for i, n in enumerate(ep.negative.bucket_counts):
                buckets.append((-_exp_bound(ep.scale, ep.negative.offset + i - 1), n))
            for bound, n in buckets:
                if n:
                    env = ctx.envelope(ts, ep.attributes, {"le": f"{bound:.6g}"})
                    group.append(_count(env, f"{name}.bucket", n, "", delta))
            for stat in _STATS:
                if ep.HasField(stat):
                    group.append(_gauge(ctx.envelope(ts, ep.attributes), f"{name}.{stat}", getattr(ep, stat), unit))
            groups.append(group)
    elif kind == "summary":
        for sp in metric.summary.data_points:
            ts = sp.time_unix_nano
            group = [
                _gauge(ctx.envelope(ts, sp.attributes), f"{name}.count", float(sp.count), ""),
                _gauge(ctx.envelope(ts, sp.attributes), f"{name}.sum", sp.sum, unit),
            ]
            for q in sp.quantile_values:
                env = ctx.envelope(ts, sp.attributes, {"quantile": f"{q.quantile:g}"})
                group.append(_gauge(env, name, q.value, unit))
            groups.append(group)
    return groups


def metrics_groups(resource_metrics: Iterable[ResourceMetrics]) -> Groups:
    """The envelopes of each data point of every metric, one group per data point."""
    groups: Groups = []
    for rm in resource_metrics:
        for sm in rm.scope_metrics:
            ctx = _Context(rm.resource, sm.scope)
            for metric in sm.metrics:
                groups += metric_groups(metric, ctx)
    return groups


def span_groups(resource_spans: Iterable[ResourceSpans]) -> Groups:
    """One ``Span`` envelope per span (OTLP's kind and status numbers are Sluice's)."""
    groups: Groups = []
    for rs in resource_spans:
        for ss in rs.scope_spans:
            ctx = _Context(rs.resource, ss.scope)
            for span in ss.spans:
                env = ctx.envelope(span.start_time_unix_nano, span.attributes)
                env.span.CopyFrom(Span(
                    trace_id=span.trace_id, span_id=span.span_id, parent_span_id=span.parent_span_id,
                    name=span.name, kind=span.kind,  # type: ignore[arg-type]
                    start=span.start_time_unix_nano, end=span.end_time_unix_nano,
                    status=span.status.code, status_message=span.status.message,  # type: ignore[arg-type]
                ))
                groups.append([env])
    return groups
