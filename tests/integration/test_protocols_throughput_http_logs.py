"""Throughput of OTLP/HTTP (protobuf and JSON) and the Loki push API into Kafka, the same load as
OTLP/gRPC's in :mod:`.test_protocols_throughput` (run both with ``-m slow -s -k "otlp or loki"``).
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1 import logs_pb2

from sluice.ingress import Gateway, issue_token
from tests.integration.gateway_helpers import add_key
from tests.integration.test_protocols_loki import push_request
from tests.integration.test_protocols_throughput import T_S, gateway, on_topic, report

pytestmark = pytest.mark.slow
__all__ = ["gateway"]  # the fixture, shared
RECORDS, CALLS, CONCURRENT = 2_000, 50, 5


async def post_all(url: str, body: bytes, headers: dict[str, str], status: int) -> float:
    """POST ``body`` CALLS times, CONCURRENT at a time, each answered ``status``; the seconds it took."""
    async with aiohttp.ClientSession() as http:
        async def one() -> None:
            async with http.post(url, data=body, headers=headers) as r:
                assert r.status == status, await r.text()
        start = time.perf_counter()
        for _ in range(CALLS // CONCURRENT):
            await asyncio.gather(*(one() for _ in range(CONCURRENT)))
        return time.perf_counter() - start


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
async def test_otlp_http_logs_throughput(gateway: Gateway, unique: str, content_type: str) -> None:
    assert gateway.protocols.http is not None
    key = await add_key(gateway.keys, f"ak_bench_{unique}")
    records = [logs_pb2.LogRecord(time_unix_nano=T_S * 10**9 + i, body=AnyValue(string_value=f"line {i}"))
               for i in range(RECORDS)]
    request = ls.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=records)])])
    json_body = json_format.MessageToJson(request).encode()
    body = request.SerializeToString() if content_type.endswith("protobuf") else json_body
    headers = {"Authorization": f"Bearer {issue_token(gateway.settings.auth, key, 600)}", "Content-Type": content_type}
    seconds = await post_all(f"http://127.0.0.1:{gateway.protocols.http.port}/v1/logs", body, headers, 200)
    report(f"OTLP/HTTP /v1/logs {content_type} ({RECORDS} records/request, {CONCURRENT} concurrent)", CALLS * RECORDS, seconds)
    assert await on_topic(gateway) == CALLS * RECORDS


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
async def test_loki_push_throughput(gateway: Gateway, unique: str, content_type: str) -> None:
    assert gateway.protocols.http is not None
    key = await add_key(gateway.keys, f"ak_bench_{unique}")
    entries = [(T_S * 10**9 + i, f"line {i}", {}) for i in range(RECORDS)]
    if content_type == "application/json":
        values = [[str(ts), line] for ts, line, _ in entries]
        body = json.dumps({"streams": [{"stream": {"job": "bench"}, "values": values}]}).encode()
    else:
        body = push_request([('{job="bench"}', entries)])
    headers = {"Authorization": f"Bearer {issue_token(gateway.settings.auth, key, 600)}", "Content-Type": content_type}
    seconds = await post_all(f"http://127.0.0.1:{gateway.protocols.http.port}/loki/api/v1/push", body, headers, 204)
    report(f"Loki push {content_type} ({RECORDS} entries/request, {CONCURRENT} concurrent)", CALLS * RECORDS, seconds)
    assert await on_topic(gateway) == CALLS * RECORDS
