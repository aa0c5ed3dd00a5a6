"""Hypothesis-generated and random bodies against OTLP/HTTP (``/v1/logs``, ``/v1/metrics``,
``/v1/traces``) and the Loki push API of a real ``sluice gateway`` process: garbage, truncated and
mutated protobuf and snappy, arbitrary and near-grammar JSON (bad hex ids, wrong types, deep
nesting, bad stream labels), corrupt gzip, wrong content types and encodings, bodies over the limit.

Every answer is a success or a 4xx naming the problem (OTLP: a ``google.rpc.Status``), never a
5xx or a hang; every refusal is counted by entry point; afterwards good requests are published
exactly and the log holds no traceback.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import cramjam
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls

from sluice.tansu import Tansu
from tests.integration.process_helpers import GatewayProcess, gateway_process

NS = 1_000_000_000
T0 = (time.time_ns() // NS - 120) * NS
MAX_BODY = 256 * 1024
KEY, GOOD, LOKI_GOOD = "ak_fuzz_otlp", "ak_fuzz_otlp_good", "ak_fuzz_loki_good"
PATHS = {"/v1/logs": "OTLP.Logs", "/v1/metrics": "OTLP.Metrics", "/v1/traces": "OTLP.Traces"}
GOOD_LOGS = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
    {"timeUnixNano": str(T0), "body": {"stringValue": "fuzz"}, "traceId": "0af7651916cd43dd8448eb211c80319c"},
]}]}]}
GOOD_PB = json_format.ParseDict(
    {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": str(T0), "body": {"stringValue": "fuzz"}}]}]}]},
    ls.ExportLogsServiceRequest(),
).SerializeToString()


@pytest.fixture(scope="module")
def gateway(tansu: Tansu, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with gateway_process(tansu, tmp_path_factory.mktemp("fuzz_otlp"), [KEY, GOOD, LOKI_GOOD],
                         protocols={"max_http_body_bytes": MAX_BODY}) as process:
        yield process


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceLogs", "resourceSpans", "resourceMetrics", "scopeLogs", "logRecords", "spans",
                         "traceId", "spanId", "body", "attributes", "key", "value", "stringValue", "kvlistValue",
                         "values", "metrics", "gauge", "dataPoints", "asInt", "timeUnixNano", "kind", "x"]),
        inner, max_size=4),
    max_leaves=30,
)


def mutated(document: Any, path: list[str], value: Any) -> bytes:
    copy = json.loads(json.dumps(document))
    node = copy["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    node[path[0]] = value
    return json.dumps(copy).encode()


u64 = st.integers(0, 2**64 - 1).map(str)
points = st.fixed_dictionaries({
    "timeUnixNano": u64, "count": u64, "scale": st.integers(-2**31, 2**31 - 1),
    "zeroCount": u64, "sum": st.floats(allow_nan=True), "explicitBounds": st.lists(st.floats(), max_size=3),
    "bucketCounts": st.lists(u64, max_size=4), "asInt": st.integers(-2**63, 2**63 - 1).map(str),
    "positive": st.fixed_dictionaries({"offset": st.integers(-2**31, 2**31 - 1), "bucketCounts": st.lists(u64, max_size=3)}),
})
metric_kinds = st.sampled_from(["gauge", "sum", "histogram", "exponentialHistogram", "summary"])
near_metrics = st.builds(  # the right shape with any numbers, for the conversion (not only the parser)
    lambda kind, temporality, point: json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", kind: {
        "aggregationTemporality": temporality, "isMonotonic": True,
        "dataPoints": [{k: v for k, v in point.items() if kind != "gauge" or k in ("timeUnixNano", "asInt")}],
    }}]}]}]}).encode(),
    metric_kinds, st.integers(0, 2), points,
)
near_spans = st.builds(
    lambda ts, kind, code: json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "s",
        "kind": kind, "startTimeUnixNano": ts, "endTimeUnixNano": ts, "status": {"code": code}}]}]}]}).encode(),
    u64, st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1),
)

bodies = st.one_of(
    near_metrics,
    near_spans,
    st.just(b""),
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(0, len(GOOD_PB)).map(lambda n: GOOD_PB[:n]),  # truncated protobuf
    st.builds(lambda b, i: GOOD_PB[:i] + b + GOOD_PB[i:], st.binary(min_size=1, max_size=8), st.integers(0, len(GOOD_PB))),
    st.builds(lambda k, v: mutated(GOOD_LOGS, [k], v),
              st.sampled_from(["traceId", "spanId", "timeUnixNano", "severityNumber", "body", "attributes"]), json_values),
    st.integers(1, 3000).map(lambda n: b'{"resourceLogs":' + b"[" * n + b"]" * n + b"}"),  # deep nesting
    st.binary(max_size=300).map(gzip.compress),
    st.integers(0, 40).map(lambda n: gzip.compress(GOOD_PB)[:n]),  # truncated gzip
    st.just(gzip.compress(b"\0" * (MAX_BODY + 1))),  # over the limit once decompressed
)
content_types = st.sampled_from([None, "application/x-protobuf", "application/json", "application/json; charset=utf-8",
                                 "text/plain", "application/protobuf"])
encodings = st.sampled_from([None, "identity", "gzip", "br", "nonsense"])


def test_otlp_http_answers_any_body_with_a_status_that_names_the_problem(gateway: GatewayProcess) -> None:
    answers: Counter[tuple[str, int]] = Counter()
    auth = {"Authorization": f"Bearer {gateway.token(KEY)}", "x-access-key": KEY}
    before = gateway.samples()

    @hypothesis_settings(max_examples=200, deadline=None, database=None)
    @given(st.sampled_from(sorted(PATHS)), bodies, content_types, encodings)
    def export(path: str, body: bytes, content_type: str | None, encoding: str | None) -> None:
        headers = dict(auth)
        if content_type:
            headers["Content-Type"] = content_type
        if encoding:
            headers["Content-Encoding"] = encoding
        status, text = gateway.post(path, body, headers)
        assert status in (200, 400, 413, 415), (status, text[:500])
        if status != 200:
            decoded = json_format.Parse(text, Status()) if text.startswith(b"{") else Status.FromString(text)
            assert decoded.code == 3 if status in (400, 415) else 8, decoded
            assert len(decoded.message) > 10, decoded
        answers[(PATHS[path], status)] += 1

    export()
    after = gateway.samples()
    for entry_point in PATHS.values():  # every refusal counted, by code
        refused = {
            dict(labels)["code"]: v - before.get((name, labels), 0) for (name, labels), v in after.items()
            if name == "sluice_gateway_rejected_calls_total" and dict(labels)["entry_point"] == entry_point
        }
        refusals = sum(n for (ep, status), n in answers.items() if ep == entry_point and status != 200)
        assert sum(refused.values()) == refusals, (entry_point, refused, answers)
        assert refused.get("RESOURCE_EXHAUSTED", 0) == answers[(entry_point, 413)]
    assert all(answers[(ep, 400)] for ep in PATHS.values()), answers  # 150+ examples: each path refused some
    print(f"\nOTLP/HTTP answers: {dict(answers)}")

    headers = {"Authorization": f"Bearer {gateway.token(GOOD)}", "Content-Type": "application/json"}
    status, text = gateway.post("/v1/logs", json.dumps(GOOD_LOGS).encode(), headers)
    assert (status, text) == (200, b"{}")
    stored = [(e.timestamp, e.log.payload, dict(e.tags)) for e in gateway.envelopes_of(GOOD)]
    assert stored == [(T0, b"fuzz", {"trace_id": "0af7651916cd43dd8448eb211c80319c"})]


LOKI_GOOD_JSON = {"streams": [{"stream": {"job": "fuzz"}, "values": [[str(T0), "line", {"k": "v"}]]}]}
loki_json = st.one_of(
    json_values.map(lambda v: json.dumps({"streams": v}).encode()),
    st.builds(lambda labels, values: json.dumps({"streams": [{"stream": labels, "values": values}]}).encode(),
              json_values, json_values),
    st.builds(lambda ts, line, meta: json.dumps({"streams": [{"stream": {}, "values": [[ts, line, meta]]}]}).encode(),
              st.one_of(st.text(max_size=25), st.integers().map(str)), json_values, json_values),
)
loki_labels = st.one_of(st.text(max_size=40), st.builds(lambda n, v: f'{{{n}="{v}"}}', st.text(max_size=8), st.text(max_size=8)))


def loki_protobuf(labels: str, line: bytes, seconds: int) -> bytes:
    """A PushRequest of one stream and entry, by hand (the field numbers of Loki's push.proto)."""
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _varint(len(payload)) + payload
    timestamp = bytes([8]) + _varint(seconds)
    return field(1, field(1, labels.encode()) + field(2, field(1, timestamp) + field(2, line)))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


loki_bodies = st.one_of(
    bodies,
    loki_json,
    st.builds(loki_protobuf, loki_labels, st.binary(max_size=30), st.integers(0, 2**64 - 1)).map(
        lambda b: bytes(cramjam.snappy.compress_raw(b))),
    st.builds(loki_protobuf, loki_labels, st.binary(max_size=30), st.integers(0, 2**63)).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda n: bytes(cramjam.snappy.compress_raw(b[:n])))),
)


def test_loki_push_answers_any_body_with_a_status_that_names_the_problem(gateway: GatewayProcess) -> None:
    answers: Counter[int] = Counter()
    auth = {"Authorization": f"Bearer {gateway.token(KEY)}"}
    before = gateway.counter("rejected_calls", entry_point="Loki")

    @hypothesis_settings(max_examples=200, deadline=None, database=None)
    @given(loki_bodies, content_types, encodings)
    def push(body: bytes, content_type: str | None, encoding: str | None) -> None:
        headers = dict(auth)
        if content_type:
            headers["Content-Type"] = content_type
        if encoding:
            headers["Content-Encoding"] = encoding
        status, text = gateway.post("/loki/api/v1/push", body, headers)
        assert status in (204, 400, 413), (status, text[:500])
        if status != 204:
            assert len(json.loads(text)["message"]) > 10, text
        answers[status] += 1

    push()
    assert gateway.counter("rejected_calls", entry_point="Loki") - before == answers[400] + answers[413], answers
    assert answers[400], answers
    print(f"\nLoki answers: {dict(answers)}")

    headers = {"Authorization": f"Bearer {gateway.token(LOKI_GOOD)}", "Content-Type": "application/json"}
    assert gateway.post("/loki/api/v1/push", json.dumps(LOKI_GOOD_JSON).encode(), headers) == (204, b"")
    stored = [(e.timestamp, e.log.payload, dict(e.tags), e.source_id) for e in gateway.envelopes_of(LOKI_GOOD)]
    assert stored == [(T0, b"line", {"job": "fuzz", "k": "v"}, "fuzz")]
