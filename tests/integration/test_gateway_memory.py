"""The memory a request can make a real ``sluice gateway`` process take: decompression bombs are
refused before they expand, concurrent large OTLP exports are decoded within the decoding budget,
and the process's RSS returns near its baseline afterwards. RSS is the process's own (psutil, and
its peak from ``/proc/<pid>/status`` after resetting it through ``clear_refs``)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import cramjam
import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from sluice.tansu import Tansu
from tests.integration.gateway_helpers import metadata_for
from tests.integration.process_helpers import GatewayProcess, gateway_process

MiB = 1 << 20
KEY = "ak_memory"
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
T0 = (time.time_ns() // 1_000_000_000 - 120) * 1_000_000_000


@pytest.fixture
def gateway(tansu: Tansu, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A fresh gateway (its RSS its own baseline) with the default limits: 16 MiB bodies, a
    128 MiB decoding budget."""
    with gateway_process(tansu, tmp_path, [KEY]) as process:
        yield process


def reset_peak(gateway: GatewayProcess) -> None:
    Path(f"/proc/{gateway.proc.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak(gateway: GatewayProcess) -> int:
    for line in Path(f"/proc/{gateway.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def bomb(encoding: str) -> bytes:
    """Zeros expanding to 300 MiB, as small as ``encoding`` makes them (snappy: 14 MiB)."""
    zeros = bytes(300 * MiB)
    if encoding == "snappy":
        return bytes(cramjam.snappy.compress_raw(zeros))
    if encoding == "zstd":
        return bytes(cramjam.zstd.compress(zeros))
    return gzip.compress(zeros) if encoding == "gzip" else zlib.compress(zeros)


def test_decompression_bombs_are_answered_413_without_the_gateway_growing(gateway: GatewayProcess) -> None:
    headers = {"Authorization": f"Bearer {gateway.token(KEY)}", "x-access-key": KEY}
    for encoding in ("snappy", "gzip", "deflate", "zstd"):
        body = bomb(encoding)
        path = "/api/v1/write" if encoding == "snappy" else "/api/v2/write"
        entry_point = "RemoteWrite" if encoding == "snappy" else "Influx.HTTP"
        refused = gateway.counter("decoding_refused_requests", entry_point=entry_point, reason="too_large")
        baseline = gateway.rss()
        reset_peak(gateway)
        status, text = gateway.post(path, body, headers | {"Content-Encoding": encoding})
        grown = peak(gateway) - baseline
        expands = "expands to 314572800 bytes, more than" if encoding == "snappy" else "expands to more than"
        assert (status, json.loads(text)["message"]) == (
            413, f"the {encoding} body {expands} protocols.max_http_body_bytes ({16 * MiB} bytes)"
        )
        assert gateway.counter("decoding_refused_requests", entry_point=entry_point, reason="too_large") == refused + 1
        print(f"\n{len(body) / MiB:.1f} MiB of {encoding} expanding to 300 MiB: peak +{grown / MiB:.0f} MiB")
        assert grown < 100 * MiB, f"a {len(body) / MiB:.1f} MiB {encoding} bomb grew the gateway by {grown / MiB:.0f} MiB"


def export_of(points: int, seed: int) -> bytes:
    """An OTLP metrics export of ``points`` gauge points with two attributes each (~52 bytes a point)."""
    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    per_metric = 1000
    metrics = [
        m.Metric(name=f"load{seed}.m{j}", gauge=m.Gauge(data_points=[
            m.NumberDataPoint(time_unix_nano=T0 + i, as_double=i * 0.5, attributes=[kv("host", f"h{i % 100}"), kv("path", f"/{i % 37}")])
            for i in range(per_metric)
        ]))
        for j in range(points // per_metric)
    ]
    request = mpb.ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
        resource=Resource(attributes=[kv("service.name", "load")]), scope_metrics=[m.ScopeMetrics(metrics=metrics)],
    )])
    return request.SerializeToString()


async def export(gateway: GatewayProcess, body: bytes, *, retry: bool) -> tuple[grpc.StatusCode, str, int]:
    """Send one export (again after the retry-after it is told, when ``retry``): the last status,
    its details and how many times the export was refused as busy."""
    busy = 0
    metadata = metadata_for(gateway.settings, KEY)
    options = [("grpc.max_send_message_length", 64 * MiB)]
    async with grpc.aio.insecure_channel(gateway.grpc, options=options) as channel:
        call = channel.unary_unary(EXPORT)
        while True:
            try:
                await call(body, metadata=metadata, timeout=60)
                return grpc.StatusCode.OK, "", busy
            except grpc.aio.AioRpcError as exc:
                trailers = dict(exc.trailing_metadata() or ())
                if not (retry and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry-after" in trailers):
                    return exc.code(), exc.details() or "", busy
                busy += 1
                await asyncio.sleep(float(trailers["retry-after"]))


def test_exports_larger_than_the_decoding_budget_are_refused_at_once(gateway: GatewayProcess) -> None:
    bodies = [export_of(160_000, seed) for seed in range(4)]  # 7.9 MiB each, as the issue's
    baseline = gateway.rss()
    reset_peak(gateway)

    async def run() -> list[tuple[grpc.StatusCode, str, int]]:
        return await asyncio.gather(*(export(gateway, body, retry=False) for body in bodies))

    results = asyncio.run(run())
    grown = peak(gateway) - baseline
    for (code, details, _), body in zip(results, bodies):
        cost = len(body) * 40 / MiB
        assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, (
            f"decoding this OTLP.Metrics export would take about {cost:.1f} MiB, more than the gateway decodes at "
            "once (gateway.max_decoding_bytes = 128.0 MiB); send smaller requests"
        ))
    assert gateway.counter("decoding_refused_requests", entry_point="OTLP.Metrics", reason="over_budget") == 4
    print(f"\n4 concurrent exports of {len(bodies[0]) / MiB:.1f} MiB refused: peak +{grown / MiB:.0f} MiB")
    assert grown < 100 * MiB, f"4 exports of {len(bodies[0]) / MiB:.1f} MiB grew the gateway by {grown / MiB:.0f} MiB"


def test_concurrent_large_exports_are_decoded_within_the_budget_and_rss_returns(gateway: GatewayProcess) -> None:
    points = 50_000  # 2.5 MiB, 100 MiB of decoding cost: two do not fit in the budget at once
    bodies = [export_of(points, seed) for seed in range(6)]
    acknowledged = gateway.counter("acknowledged_envelopes", access_key=KEY)
    baseline = gateway.rss()
    reset_peak(gateway)

    async def run() -> list[tuple[grpc.StatusCode, str, int]]:
        return await asyncio.gather(*(export(gateway, body, retry=True) for body in bodies))

    results = asyncio.run(run())
    grown = peak(gateway) - baseline
    assert [code for code, _, _ in results] == [grpc.StatusCode.OK] * 6, results
    assert gateway.counter("acknowledged_envelopes", access_key=KEY) == acknowledged + 6 * points
    print(f"\n6 concurrent exports of {len(bodies[0]) / MiB:.1f} MiB: peak +{grown / MiB:.0f} MiB over "
          f"{baseline / MiB:.0f} MiB, {sum(b for _, _, b in results)} busy answers")
    assert grown < 160 * MiB, f"the gateway grew by {grown / MiB:.0f} MiB"
    time.sleep(1)
    after = gateway.rss()
    print(f"RSS after the load: {after / MiB:.0f} MiB (baseline {baseline / MiB:.0f} MiB)")
    assert after < baseline + 40 * MiB, f"RSS stayed {(after - baseline) / MiB:.0f} MiB over its baseline"

