"""OTLP/JSON decoding: hex ids, integer enums, int64 as strings, unknown fields, and refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.ingress.protocols.lines import Malformed
from sluice.ingress.protocols.otlp_http import JSON, PROTOBUF, parse
from sluice.ingress.protocols.otlp_service import SIGNALS, Signal

LOGS, METRICS, TRACES = SIGNALS


def test_json_spans_take_hex_ids_integer_enums_and_string_int64s() -> None:
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "eee19b7ec3c1b174", "kind": 3,
        "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": 1544712661000000000, "newField": [1],
        "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002"}],
    }]}]}]}
    request = parse(TRACES, json.dumps(body).encode(), JSON)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id.hex(), span.span_id.hex(), span.kind, span.start_time_unix_nano, span.end_time_unix_nano) == (
        "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", 3, 1544712660000000000, 1544712661000000000)
    assert (span.links[0].trace_id.hex(), span.links[0].span_id.hex()) == ("0" * 31 + "1", "0" * 15 + "2")


@pytest.mark.parametrize(("body", "start"), [
    (b"not json", "the body is not JSON: "),
    (b"[1]", "the body is not a JSON opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest object"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "xyz"}]}]}]}', "traceId 'xyz' is not hex"),
    (b'{"resourceLogs": 3}', "the body is not a valid opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest in OTLP/JSON: "),
    (b'{"resourceLogs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "the body is not JSON: "),
])
def test_bad_json_is_malformed_naming_the_problem(body: bytes, start: str) -> None:
    with pytest.raises(Malformed) as raised:
        parse(LOGS, body, JSON)
    assert str(raised.value).startswith(start), str(raised.value)


def test_bad_protobuf_is_malformed() -> None:
    with pytest.raises(Malformed) as raised:
        parse(METRICS, b"\xff\xff", PROTOBUF)
    assert str(raised.value).startswith("the body is not a valid opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest: ")


def test_exponential_histogram_bounds_past_the_largest_float_are_infinite() -> None:
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "h", "exponentialHistogram": {
        "aggregationTemporality": 1, "dataPoints": [
            {"scale": -100, "count": "2", "positive": {"offset": 5, "bucketCounts": ["1"]},
             "negative": {"offset": 2147483646, "bucketCounts": ["1"]}},
        ]}}]}]}]}
    [group] = METRICS.groups(parse(METRICS, json.dumps(body).encode(), JSON))
    assert [(e.counter.name, e.counter.delta, dict(e.tags)) for e in group] == [
        ("h.count", 2, {}), ("h.bucket", 1, {"le": "inf"}), ("h.bucket", 1, {"le": "-inf"}),
    ]


@pytest.mark.parametrize(("signal", "body", "message"), [
    (LOGS, {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": str(2**64 - 1)}]}]}]},
     f"timestamp {2**64 - 1} ns is out of range (after 2262)"),
    (METRICS, {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "h", "histogram": {
        "aggregationTemporality": 1, "dataPoints": [{"count": "1", "bucketCounts": [str(2**64 - 1), "1"],
                                                     "explicitBounds": [1.0]}]}}]}]}]},
     f"h.bucket {2**64} does not fit in 64 bits"),
])
def test_values_past_64_bits_are_malformed(signal: Signal, body: dict[str, Any], message: str) -> None:
    with pytest.raises(Malformed) as raised:
        signal.groups(parse(signal, json.dumps(body).encode(), JSON))
    assert str(raised.value) == message
