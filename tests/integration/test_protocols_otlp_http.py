"""OTLP/HTTP end to end: the OpenTelemetry Python SDK's HTTP exporters (binary protobuf, gzip) and
OTLP/JSON bodies written per the specification's examples (the Python SDK has no JSON exporter),
against ``/v1/logs``, ``/v1/metrics`` and ``/v1/traces`` of the gateway's HTTP listeners.

The SDK's exports are stored by a real worker and read back from ClickHouse; the JSON ones are read
from the raw topic. Refusals are answered with the specification's statuses and a
``google.rpc.Status`` body (decoded with googleapis-common-protos), and counted.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status as SpanStatus, StatusCode

from sluice.ingress import Gateway, issue_token
from sluice.keys import Limits
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import Envelope, Log, Span
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key, assert_accounted, envelopes_of, read_topic
from tests.integration.protocol_helpers import with_protocols

NS = 1_000_000_000
T0 = (time.time_ns() // NS - 120) * NS
RESOURCE = {"service.name": "checkout", "service.instance.id": "pod-1"}


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    configured = with_protocols(settings, unique)
    configured.protocols.otlp_http_listen = "127.0.0.1:0"
    async with Gateway(configured) as gw:
        yield gw


def otlp_url(gateway: Gateway) -> str:
    """OTLP/HTTP's own listener (``protocols.otlp_http_listen``)."""
    assert gateway.protocols.otlp_http is not None
    return f"http://127.0.0.1:{gateway.protocols.otlp_http.port}"


def http_url(gateway: Gateway) -> str:
    """The HTTP writes' listener (``protocols.http_listen``), which serves OTLP/HTTP too."""
    assert gateway.protocols.http is not None
    return f"http://127.0.0.1:{gateway.protocols.http.port}"


def auth(gateway: Gateway, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(gateway.settings.auth, key, 60)}", "x-access-key": key}


async def test_sdk_http_exporters_store_logs_metrics_and_traces(
    gateway: Gateway, worker_process: WorkerProcess, unique: str
) -> None:
    key = await add_key(gateway.keys, f"ak_otlphttp_{unique}")
    worker_process.start()
    headers, url = auth(gateway, key), otlp_url(gateway)

    def export_logs() -> None:
        exporter = OTLPLogExporter(endpoint=f"{url}/v1/logs", headers=headers, compression=Compression.Gzip)
        provider = LoggerProvider(resource=Resource(RESOURCE))
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        logger = provider.get_logger("orders", "1.2")
        logger.emit(LogRecord(timestamp=T0 + 1, body="order placed", severity_text="INFO",
                              severity_number=SeverityNumber.INFO, attributes={"order.id": 42}))
        logger.emit(LogRecord(timestamp=T0 + 2, body="card declined", severity_number=SeverityNumber.ERROR))
        provider.shutdown()

    def export_metrics() -> None:
        exporter = OTLPMetricExporter(endpoint=f"{url}/v1/metrics", headers=headers,
                                      preferred_temporality={Counter: AggregationTemporality.DELTA})
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(resource=Resource(RESOURCE), metric_readers=[reader])
        meter = provider.get_meter("shop")
        orders = meter.create_counter("orders")
        orders.add(3, {"route": "/buy"})
        orders.add(2, {"route": "/buy"})
        meter.create_up_down_counter("queue.depth").add(-4)  # cumulative, not monotonic: a gauge
        provider.shutdown()

    def export_spans() -> tuple[int, int, int]:
        provider = TracerProvider(resource=Resource(RESOURCE))
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=headers)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("web")
        root = tracer.start_span("GET /cart", kind=SpanKind.SERVER, start_time=T0 + 10, attributes={"http.status": 200})
        child = tracer.start_span("db.query", context=trace.set_span_in_context(root), start_time=T0 + 20)
        child.set_status(SpanStatus(StatusCode.ERROR, "timeout"))
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
        [T0 + 2, "checkout", "pod-1", "ERR", "card declined", {**RESOURCE, **scope}],
    ]
    tags = {**RESOURCE, "otel.scope.name": "shop"}
    rows = await worker_process.query(
        "SELECT name, any(kind), any(tags), sum(count), sum(sum), max(last).2 FROM sluice.metrics_1s "
        f"WHERE access_key = '{key}' GROUP BY name, series_id ORDER BY name"
    )
    assert rows == [
        ["orders", "counter", {**tags, "route": "/buy"}, 1, 5.0, 0.0],
        ["queue.depth", "gauge", tags, 1, -4.0, -4.0],
    ]
    spans = await worker_process.query(
        "SELECT toUnixTimestamp64Nano(timestamp), trace_id, span_id, parent_span_id, name, kind, "
        "toUnixTimestamp64Nano(end_time), status, status_message, tags "
        f"FROM sluice.spans FINAL WHERE access_key = '{key}' ORDER BY timestamp"
    )
    tid, web = f"{trace_id:032x}", {**RESOURCE, "otel.scope.name": "web"}
    assert spans == [
        [T0 + 10, tid, f"{root_id:016x}", "", "GET /cart", "SERVER", T0 + 100, "UNSET", "", {**web, "http.status": "200"}],
        [T0 + 20, tid, f"{child_id:016x}", f"{root_id:016x}", "db.query", "INTERNAL", T0 + 70, "ERROR", "timeout", web],
    ]
    assert worker_process.status()["counters"]["dead_letters"] == 0


TRACE_ID, SPAN_ID, PARENT_ID = "5B8EFFF798038103D269B633813FC60C", "EEE19B7EC3C1B174", "EEE19B7EC3C1B173"
JSON_TRACES = {"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
    "scopeSpans": [{"scope": {"name": "web"}, "spans": [{
        "traceId": TRACE_ID, "spanId": SPAN_ID, "parentSpanId": PARENT_ID, "name": "GET /cart", "kind": 2,
        "startTimeUnixNano": str(T0 + 10), "endTimeUnixNano": str(T0 + 100),
        "attributes": [{"key": "http.status", "value": {"intValue": "200"}}],
        "status": {"code": 2, "message": "boom"}, "futureField": {"ignored": True},
    }]}],
}]}
JSON_LOGS = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
    "timeUnixNano": str(T0 + 1), "severityNumber": 17, "severityText": "ERROR", "body": {"stringValue": "disk full"},
    "traceId": TRACE_ID.lower(), "spanId": SPAN_ID,
}]}]}]}
JSON_METRICS = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "temp", "unit": "C", "gauge": {"dataPoints": [
    {"timeUnixNano": str(T0 + 5), "asDouble": 21.5}, {"timeUnixNano": T0 + 6, "asInt": "-3"},
]}}]}]}]}


async def test_otlp_json_bodies_are_stored_and_answered_in_json(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_otlpjson_{unique}")
    headers = auth(gateway, key) | {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for path, body in (("/v1/traces", JSON_TRACES), ("/v1/logs", JSON_LOGS), ("/v1/metrics", JSON_METRICS)):
            data = json.dumps(body).encode()
            sent = {**headers, "Content-Encoding": "gzip"} if path == "/v1/logs" else headers
            async with http.post(f"{http_url(gateway)}{path}", data=gzip.compress(data) if path == "/v1/logs" else data,
                                 headers=sent) as r:
                assert (r.status, r.content_type, await r.json()) == (200, "application/json", {}), path
    stored = envelopes_of(await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic))
    span = Envelope(timestamp=T0 + 10, source_id="cart", tags={"service.name": "cart", "otel.scope.name": "web",
                                                                  "http.status": "200"})
    span.span.CopyFrom(Span(trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(SPAN_ID),
                            parent_span_id=bytes.fromhex(PARENT_ID), name="GET /cart", kind=Span.SERVER,
                            start=T0 + 10, end=T0 + 100, status=Span.ERROR, status_message="boom"))
    log = Envelope(timestamp=T0 + 1, source_id=key, tags={"severity": "ERROR", "trace_id": TRACE_ID.lower(),
                                                           "span_id": SPAN_ID.lower()})
    log.log.CopyFrom(Log(payload=b"disk full", type=Log.ERR))
    temps = [Envelope(timestamp=T0 + 5, source_id=key), Envelope(timestamp=T0 + 6, source_id=key)]
    temps[0].gauge.metrics["temp"].unit, temps[0].gauge.metrics["temp"].value = "C", 21.5
    temps[1].gauge.metrics["temp"].unit, temps[1].gauge.metrics["temp"].value = "C", -3.0
    assert stored == [span, log, *temps]


async def test_partial_success_and_refusals_answer_per_the_specification(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_otlprefuse_{unique}")
    other = await add_key(gateway.keys, f"ak_otlpother_{unique}")
    nan_and_good = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "temp", "gauge": {"dataPoints": [
        {"timeUnixNano": str(T0), "asDouble": 1.5}, {"timeUnixNano": str(T0), "asDouble": "NaN"},
    ]}}]}]}]}
    proto = ms.ExportMetricsServiceRequest()
    json_format.ParseDict(nan_and_good, proto)
    good, url = auth(gateway, key), f"{otlp_url(gateway)}/v1/metrics"
    pb = {"Content-Type": "application/x-protobuf"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=json.dumps(nan_and_good), headers=good | {"Content-Type": "application/json"}) as r:
            answer = await r.json()
            assert (r.status, answer["partialSuccess"]["rejectedDataPoints"]) == (200, "1")
            assert "not allowed" in answer["partialSuccess"]["errorMessage"]
        async with http.post(url, data=proto.SerializeToString(), headers=good | pb) as r:
            response = ms.ExportMetricsServiceResponse.FromString(await r.read())
            assert (r.status, r.content_type, response.partial_success.rejected_data_points) == (200, pb["Content-Type"], 1)

        async def refused(headers: dict[str, str], body: bytes) -> tuple[int, str, int, str]:
            async with http.post(url, data=body, headers=headers) as r:
                raw = await r.read()
                status = (json_format.Parse(raw, Status()) if r.content_type == "application/json"
                          else Status.FromString(raw))
                return r.status, r.content_type, status.code, status.message

        assert await refused({"x-access-key": key} | pb, b"") == (
            401, pb["Content-Type"], 16, "missing 'authorization' metadata: expected 'Bearer <JWT>'")
        wrong_key = {**good, "x-access-key": other}
        status, _, code, message = await refused(wrong_key | pb, b"")
        assert (status, code) == (401, 16) and "does not match" in message, message
        status, content_type, code, message = await refused(good | pb, b"\xff\xff\xff")
        assert (status, content_type, code) == (400, pb["Content-Type"], 3)
        assert message.startswith("the body is not a valid opentelemetry.proto.collector.metrics.v1."), message
        status, content_type, code, message = await refused(good | {"Content-Type": "application/json"}, b'{"resourceMetrics": 7}')
        assert (status, content_type, code) == (400, "application/json", 3) and "OTLP/JSON" in message, message
        too_late = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "t", "gauge": {"dataPoints": [
            {"timeUnixNano": str(2**64 - 1), "asDouble": 1.0}]}}]}]}]}
        assert await refused(good | {"Content-Type": "application/json"}, json.dumps(too_late).encode()) == (
            400, "application/json", 3, f"timestamp {2**64 - 1} ns is out of range (after 2262)")
        assert await refused(good | {"Content-Type": "text/plain"}, b"x") == (
            415, pb["Content-Type"], 3,
            "unsupported Content-Type 'text/plain'; OTLP/HTTP takes application/x-protobuf or application/json")
        status, _, code, message = await refused(good | pb | {"Content-Encoding": "br"}, b"x")
        assert (status, code, message) == (400, 3, "unsupported Content-Encoding 'br'; expected gzip or identity")
    assert gateway.metrics_port
    await assert_accounted(gateway.metrics_port, key, sent=4, acknowledged=2, rejected={"INVALID_ARGUMENT": 2},
                           refused_calls={"UNAUTHENTICATED": 2, "INVALID_ARGUMENT": 5})


async def test_a_key_over_its_byte_rate_is_answered_429_with_retry_after(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_otlprate_{unique}", limits=Limits(bytes_per_second=10, bytes_burst=300))
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": str(T0 + i), "body": {"stringValue": "x" * 200}} for i in range(3)
    ]}]}]}
    headers = auth(gateway, key) | {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{otlp_url(gateway)}/v1/logs", data=json.dumps(logs), headers=headers) as r:
            assert (r.status, await r.read()) == (200, b"{}")  # a full bucket lets a request through
        async with http.post(f"{otlp_url(gateway)}/v1/logs", data=json.dumps(logs), headers=headers) as r:
            status = json_format.Parse(await r.read(), Status())
            prefix = f"access key '{key}' is over its limit of 10 bytes/s; retry in "
            assert status.message.startswith(prefix) and status.message.endswith("s"), status
            wait = float(status.message.removeprefix(prefix)[:-1])
            assert (r.status, r.headers.get("Retry-After"), status.code) == (429, str(round(wait)), 8), status
            assert wait > 1
    assert gateway.metrics_port
    await assert_accounted(gateway.metrics_port, key, sent=6, acknowledged=3, refused_calls={"RESOURCE_EXHAUSTED": 1})
