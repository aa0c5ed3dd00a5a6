"""Throughput of each protocol listener into Kafka (gateway only; run with ``-m slow -s``).

Each test pushes a fixed load through one listener, waits for Kafka's acknowledgement (or for the
UDP listener to have handled every datagram), prints envelopes/s and checks that every envelope
sent is on the raw topic exactly once (UDP: every one not counted as dropped).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
import pytest_asyncio
import snappy
import statsd
from opentelemetry.exporter.prometheus_remote_write.gen import remote_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls, logs_service_pb2_grpc as ls_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1 import logs_pb2

from sluice.ingress import Gateway, issue_token
from sluice.ingress.protocols.udp import UdpListener
from sluice.settings import Settings
from tests.integration.gateway_helpers import add_key, envelopes_of, read_topic
from tests.integration.protocol_helpers import with_protocols

pytestmark = pytest.mark.slow

T_S = int(time.time()) - 60  # a minute ago, in seconds: within every retention


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    async with Gateway(with_protocols(settings, unique)) as gw:
        yield gw


def report(name: str, envelopes: int, seconds: float) -> None:
    print(f"\n{name}: {envelopes} envelopes in {seconds:.2f}s = {envelopes / seconds:,.0f} envelopes/s")


async def on_topic(gateway: Gateway) -> int:
    return len(envelopes_of(await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)))


async def post_concurrently(url: str, body: bytes, headers: dict[str, str], requests: int, concurrency: int = 4) -> None:
    """POST ``body`` ``requests`` times, ``concurrency`` at a time; every answer must be 204."""
    async with aiohttp.ClientSession() as http:
        async def one() -> None:
            async with http.post(url, data=body, headers=headers) as r:
                assert r.status == 204, await r.text()
        for _ in range(requests // concurrency):
            await asyncio.gather(*(one() for _ in range(concurrency)))


async def test_statsd_udp_throughput(gateway: Gateway) -> None:
    listener = gateway.protocols.statsd
    assert listener is not None
    await add_key(gateway.keys, listener.access_key)
    datagrams, lines = 5_000, 20
    payload = "\n".join(f"req.{i}:1|c|#route:/{i}" for i in range(lines)).encode()

    def blast() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(datagrams):
                sock.sendto(payload, ("127.0.0.1", listener.port))

    start = time.perf_counter()
    await asyncio.to_thread(blast)
    seconds = await settled(listener) - start
    handled = listener.handled
    stored = (handled - int(dropped(gateway))) * lines
    lost = datagrams - handled  # never reached the listener: the kernel's receive buffer overflowed
    report(f"statsd UDP (raw socket, {lines} lines/datagram; {lost} lost in the kernel, "
           f"{dropped(gateway):.0f} dropped by the queue)", stored, seconds)
    assert await on_topic(gateway) == stored

    client = statsd.StatsClient("127.0.0.1", listener.port)  # the client library, one datagram per call
    before, n = listener.handled, 5_000
    start = time.perf_counter()
    await asyncio.to_thread(lambda: [client.incr("jobs") for _ in range(n)])
    seconds = await settled(listener) - start
    report(f"statsd UDP (statsd.StatsClient.incr, 1 line/datagram; {n - listener.handled + before} lost)",
           listener.handled - before, seconds)


async def settled(listener: UdpListener, quiet: float = 0.5) -> float:
    """When the listener last made progress, once it has made none for ``quiet`` seconds."""
    last, at = -1, time.perf_counter()
    while time.perf_counter() - at < quiet:
        if listener.handled != last:
            last, at = listener.handled, time.perf_counter()
        await asyncio.sleep(0.01)
    return at


def dropped(gateway: Gateway) -> float:
    return sum(s.value for m in gateway.metrics.udp_dropped.collect() for s in m.samples if s.name.endswith("_total"))


async def test_influx_http_throughput(gateway: Gateway, unique: str) -> None:
    assert gateway.protocols.http is not None
    key = await add_key(gateway.keys, f"ak_bench_{unique}")
    url = f"http://127.0.0.1:{gateway.protocols.http.port}/api/v2/write?precision=s"
    headers = {"Authorization": f"Token {issue_token(gateway.settings.auth, key, 600)}"}
    requests, lines = 40, 5_000
    body = "\n".join(f"cpu,host=h{i % 50} usage={i / 7:.3f},n={i}i {T_S}" for i in range(lines)).encode()
    start = time.perf_counter()
    await post_concurrently(url, body, headers, requests)
    report("Influx HTTP /api/v2/write (5000 lines/request, 4 concurrent)", requests * lines, time.perf_counter() - start)
    assert await on_topic(gateway) == requests * lines


async def test_remote_write_throughput(gateway: Gateway, unique: str) -> None:
    assert gateway.protocols.http is not None
    key = await add_key(gateway.keys, f"ak_bench_{unique}")
    request = remote_pb2.WriteRequest()
    for s in range(500):
        series = request.timeseries.add()
        series.labels.add(name="__name__", value="http_requests_total")
        series.labels.add(name="pod", value=f"p{s}")
        for i in range(10):
            series.samples.add(value=float(i), timestamp=T_S * 1000 + i)
    body = snappy.compress(request.SerializeToString())
    headers = {"Authorization": f"Bearer {issue_token(gateway.settings.auth, key, 600)}", "x-access-key": key}
    url = f"http://127.0.0.1:{gateway.protocols.http.port}/api/v1/write"
    requests = 40
    start = time.perf_counter()
    await post_concurrently(url, body, headers, requests)
    report("Prometheus remote write (5000 samples/request, 4 concurrent)", requests * 5000, time.perf_counter() - start)
    assert await on_topic(gateway) == requests * 5000


async def test_otlp_logs_throughput(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_bench_{unique}")
    records = [logs_pb2.LogRecord(time_unix_nano=T_S * 10**9 + i, body=AnyValue(string_value=f"line {i}"))
               for i in range(2_000)]
    request = ls.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=records)])])
    metadata = (("authorization", f"Bearer {issue_token(gateway.settings.auth, key, 600)}"), ("x-access-key", key))
    calls = 50
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ls_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        start = time.perf_counter()
        for _ in range(calls // 5):
            await asyncio.gather(*(stub.Export(request, metadata=metadata) for _ in range(5)))
        report("OTLP LogsService.Export (2000 records/call, 5 concurrent)", calls * 2000, time.perf_counter() - start)
    assert await on_topic(gateway) == calls * 2000
