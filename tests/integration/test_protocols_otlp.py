"""OTLP/gRPC end to end, driven by the OpenTelemetry Python SDK and its OTLP gRPC exporters.

The SDK exports logs, metrics and traces to the gateway's port with the token and access key as
headers; a real worker stores them; the exact rows are read back from ClickHouse.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import grpc
import pytest_asyncio
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms, metrics_service_pb2_grpc as ms_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key, assert_accounted

NS = 1_000_000_000
T0 = (time.time_ns() // NS - 120) * NS
RESOURCE = {"service.name": "checkout", "service.instance.id": "pod-1", "env": "prod"}


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(settings) as gw:
        yield gw


def headers_for(gateway: Gateway, key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {issue_token(gateway.settings.auth, key, 60)}"), ("x-access-key", key))


async def test_otlp_logs_metrics_and_traces_from_the_sdk(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_otlp_{unique}")
    worker_process.start()
    headers = headers_for(gateway, key)

    def export_logs() -> None:
        provider = LoggerProvider(resource=Resource(RESOURCE))
        provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=gateway.address, insecure=True, headers=headers))
        )
        logger = provider.get_logger("orders", "1.2")
        logger.emit(LogRecord(timestamp=T0 + 1, body="order placed", severity_text="INFO",
                              severity_number=SeverityNumber.INFO, attributes={"order.id": 42}))
        logger.emit(LogRecord(timestamp=T0 + 2, body={"error": "card declined"},
                              severity_number=SeverityNumber.ERROR, attributes={"retry": True}))
        provider.shutdown()

    def export_metrics() -> None:
        exporter = OTLPMetricExporter(
            endpoint=gateway.address, insecure=True, headers=headers,
            preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA},
        )
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(
            resource=Resource(RESOURCE), metric_readers=[reader],
            views=[
                View(instrument_name="latency", aggregation=ExplicitBucketHistogramAggregation([10, 100])),
                # scale 0: base 2, buckets (2**i, 2**(i+1)], so 1, 2 and 4 land in buckets ending at 1, 2, 4
                View(instrument_name="payload", aggregation=ExponentialBucketHistogramAggregation(max_scale=0)),
            ],
        )
        meter = provider.get_meter("shop")
        orders = meter.create_counter("orders")
        orders.add(3, {"route": "/buy"})
        orders.add(2, {"route": "/buy"})
        latency = meter.create_histogram("latency", unit="ms")
        for value in (5, 50, 500):
            latency.record(value)
        payload = meter.create_histogram("payload", unit="By")
        for value in (1, 2, 4, 4):
            payload.record(value)
        meter.create_up_down_counter("queue.depth").add(-4)  # cumulative, not monotonic: a gauge
        provider.shutdown()  # collects and exports once

    def export_spans() -> tuple[int, int, int]:
        provider = TracerProvider(resource=Resource(RESOURCE))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=gateway.address, insecure=True, headers=headers))
        )
        tracer = provider.get_tracer("web")
        root = tracer.start_span("GET /cart", kind=SpanKind.SERVER, start_time=T0 + 10, attributes={"http.status": 200})
        child = tracer.start_span("db.query", context=trace.set_span_in_context(root), start_time=T0 + 20)
        child.set_status(Status(StatusCode.ERROR, "timeout"))
        child.end(end_time=T0 + 70)
        root.end(end_time=T0 + 100)
        provider.shutdown()
        ids = root.get_span_context(), child.get_span_context()
        return ids[0].trace_id, ids[0].span_id, ids[1].span_id

    await asyncio.to_thread(export_logs)
    await asyncio.to_thread(export_metrics)
    trace_id, root_id, child_id = await asyncio.to_thread(export_spans)
    await worker_process.caught_up()

    logs = await worker_process.query(
        "SELECT toUnixTimestamp64Nano(timestamp), source_id, instance_id, type, payload, tags "
        f"FROM sluice.logs FINAL WHERE access_key = '{key}' ORDER BY timestamp"
    )
    scope = {"otel.scope.name": "orders", "otel.scope.version": "1.2"}
    assert logs == [
        [T0 + 1, "checkout", "pod-1", "OUT", "order placed", {**RESOURCE, **scope, "order.id": "42", "severity": "INFO"}],
        [T0 + 2, "checkout", "pod-1", "ERR", '{"error":"card declined"}', {**RESOURCE, **scope, "retry": "true"}],
    ]
    tags = {**RESOURCE, "otel.scope.name": "shop"}
    rows = await worker_process.query(
        "SELECT name, any(kind), any(unit), any(tags), sum(count), sum(sum), max(last).2 FROM sluice.metrics_1s "
        f"WHERE access_key = '{key}' GROUP BY name, series_id ORDER BY name, toString(any(tags))"
    )
    assert rows == [
        ["latency.bucket", "counter", "", {**tags, "le": "+Inf"}, 1, 3.0, 0.0],
        ["latency.bucket", "counter", "", {**tags, "le": "10"}, 1, 1.0, 0.0],
        ["latency.bucket", "counter", "", {**tags, "le": "100"}, 1, 2.0, 0.0],
        ["latency.count", "counter", "", tags, 1, 3.0, 0.0],
        ["latency.max", "gauge", "ms", tags, 1, 500.0, 500.0],
        ["latency.min", "gauge", "ms", tags, 1, 5.0, 5.0],
        ["latency.sum", "gauge", "ms", tags, 1, 555.0, 555.0],
        ["orders", "counter", "", {**tags, "route": "/buy"}, 1, 5.0, 0.0],
        ["payload.bucket", "counter", "", {**tags, "le": "1"}, 1, 1.0, 0.0],
        ["payload.bucket", "counter", "", {**tags, "le": "2"}, 1, 1.0, 0.0],
        ["payload.bucket", "counter", "", {**tags, "le": "4"}, 1, 2.0, 0.0],
        ["payload.count", "counter", "", tags, 1, 4.0, 0.0],
        ["payload.max", "gauge", "By", tags, 1, 4.0, 4.0],
        ["payload.min", "gauge", "By", tags, 1, 1.0, 1.0],
        ["payload.sum", "gauge", "By", tags, 1, 11.0, 11.0],
        ["queue.depth", "gauge", "", tags, 1, -4.0, -4.0],
    ]
    spans = await worker_process.query(
        "SELECT toUnixTimestamp64Nano(timestamp), source_id, instance_id, trace_id, span_id, parent_span_id, name, "
        "kind, toUnixTimestamp64Nano(end_time), duration_ns, status, status_message, tags "
        f"FROM sluice.spans FINAL WHERE access_key = '{key}' ORDER BY timestamp"
    )
    tid, web = f"{trace_id:032x}", {**RESOURCE, "otel.scope.name": "web"}
    assert spans == [
        [T0 + 10, "checkout", "pod-1", tid, f"{root_id:016x}", "", "GET /cart", "SERVER", T0 + 100, 90,
         "UNSET", "", {**web, "http.status": "200"}],
        [T0 + 20, "checkout", "pod-1", tid, f"{child_id:016x}", f"{root_id:016x}", "db.query", "INTERNAL",
         T0 + 70, 50, "ERROR", "timeout", web],
    ]
    assert worker_process.status()["counters"]["dead_letters"] == 0


async def test_otlp_partial_success_reports_rejected_points(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_otlp_{unique}")
    metric = metrics_pb2.Metric(name="temp", gauge=metrics_pb2.Gauge(data_points=[
        metrics_pb2.NumberDataPoint(time_unix_nano=T0, as_double=21.5),
        metrics_pb2.NumberDataPoint(time_unix_nano=T0, as_double=math.nan),
    ]))
    request = ms.ExportMetricsServiceRequest(resource_metrics=[
        metrics_pb2.ResourceMetrics(scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])
    ])
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ms_grpc.MetricsServiceStub(channel)  # type: ignore[no-untyped-call]
        response = await stub.Export(request, metadata=headers_for(gateway, key))
        assert response.partial_success.rejected_data_points == 1
        assert "not allowed" in response.partial_success.error_message
        try:
            await stub.Export(request, metadata=(("x-access-key", key),))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("a call without a token was accepted")
    assert gateway.metrics_port
    await assert_accounted(gateway.metrics_port, key, sent=2, acknowledged=1, rejected={"INVALID_ARGUMENT": 1},
                           refused_calls={"UNAUTHENTICATED": 1})


async def test_undecodable_otlp_requests_are_answered_invalid_argument_and_counted(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_otlp_{unique}")
    services = {  # entry point: (package, service, request)
        "OTLP.Logs": ("opentelemetry.proto.collector.logs.v1", "LogsService", "ExportLogsServiceRequest"),
        "OTLP.Metrics": ("opentelemetry.proto.collector.metrics.v1", "MetricsService", "ExportMetricsServiceRequest"),
        "OTLP.Traces": ("opentelemetry.proto.collector.trace.v1", "TraceService", "ExportTraceServiceRequest"),
    }
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        for entry_point, (package, service, request) in services.items():
            try:
                await channel.unary_unary(f"/{package}.{service}/Export")(b"\xff\xff\xff", metadata=headers_for(gateway, key))
            except grpc.aio.AioRpcError as exc:
                assert (exc.code(), exc.details()) == (grpc.StatusCode.INVALID_ARGUMENT, (
                    f"the request is not a valid {package}.{request}: "
                    f"Error parsing message with type '{package}.{request}': Wire format was corrupt"
                ))
            else:
                raise AssertionError(f"{entry_point} accepted an undecodable request")
            assert gateway.metrics.rejected_calls.labels(entry_point, "INVALID_ARGUMENT")._value.get() == 1
    assert gateway.metrics.invalid.labels("malformed")._value.get() == 3
