"""HTTP writes end to end: influxdb-client's write API (v2 and v1 endpoints) and Prometheus remote
write payloads built with the ``prometheus.WriteRequest`` messages that
opentelemetry-exporter-prometheus-remote-write publishes, compressed with python-snappy.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
import snappy
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from opentelemetry.exporter.prometheus_remote_write.gen import remote_pb2

from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.protocol_helpers import metric_rows, with_protocols

NS = 1_000_000_000
# A whole second two minutes ago: its windows close at once, and no table TTL has expired it.
T0 = (time.time_ns() // NS - 120) * NS
STALE_NAN = 0x7FF0000000000002


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    async with Gateway(with_protocols(settings, unique)) as gw:
        yield gw


def url_of(gateway: Gateway) -> str:
    assert gateway.protocols.http is not None
    return f"http://127.0.0.1:{gateway.protocols.http.port}"


async def test_influx_client_writes(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_influx_http_{unique}")
    worker_process.start()
    token = issue_token(gateway.settings.auth, key, 60)

    def write() -> str:
        with InfluxDBClient(url=url_of(gateway), token=token, org="acme", enable_gzip=True) as client:
            assert client.ping()
            api = client.write_api(write_options=SYNCHRONOUS)
            api.write("metrics", record=[
                Point("mem").tag("host", "h1").field("used", 512).time(T0, WritePrecision.NS),
                Point("mem").tag("host", "h1").field("used", 1024).time(T0 + 1, WritePrecision.NS),
            ])
            api.write("metrics", record=f"disk,dev=sda free=7u,ok=FALSE {T0 // NS}", write_precision=WritePrecision.S)
            try:
                api.write("metrics", record=f"bad line\nmem,host=h2 used=1i {T0 // 1_000_000}", write_precision=WritePrecision.MS)
            except ApiException as exc:  # InfluxDB's partial write: 400, the good line stored
                return f"{exc.status} {exc.body}"
        return "no error"

    partial = await asyncio.to_thread(write)
    assert partial.startswith("400 ") and "partial write: 1 rejected, 1 stored" in partial

    async with aiohttp.ClientSession() as http:  # the v1 endpoint: token as the p parameter
        async with http.post(f"{url_of(gateway)}/write?db=x&precision=s&p={token}", data=f"up v=1 {T0 // NS}".encode()) as r:
            assert r.status == 204
        async with http.post(f"{url_of(gateway)}/api/v2/write", data=b"up v=1", headers={"Authorization": "Token nope"}) as r:
            assert r.status == 401
    await worker_process.caught_up()

    assert await metric_rows(worker_process, key) == [
        ["disk.free", "gauge", "", {"dev": "sda"}, 1, 7.0, 7.0, 7.0, 7.0],
        ["disk.ok", "gauge", "", {"dev": "sda"}, 1, 0.0, 0.0, 0.0, 0.0],
        ["mem.used", "gauge", "", {"host": "h1"}, 2, 1536.0, 512.0, 1024.0, 1024.0],
        ["mem.used", "gauge", "", {"host": "h2"}, 1, 1.0, 1.0, 1.0, 1.0],
        ["up.v", "gauge", "", {}, 1, 1.0, 1.0, 1.0, 1.0],
    ]


def write_request() -> bytes:
    request = remote_pb2.WriteRequest()
    series = request.timeseries.add()
    for name, value in (("__name__", "http_requests_total"), ("job", "api"), ("code", "200")):
        series.labels.add(name=name, value=value)
    series.samples.add(value=10, timestamp=T0 // 1_000_000)
    series.samples.add(value=15, timestamp=T0 // 1_000_000 + 500)
    series.samples.add(value=struct_nan(STALE_NAN), timestamp=T0 // 1_000_000 + 900)  # a staleness marker
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="temperature")
    series.samples.add(value=-3.5, timestamp=T0 // 1_000_000 + 1000)
    return snappy.compress(request.SerializeToString())


def struct_nan(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


async def test_prometheus_remote_write(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_prom_{unique}")
    worker_process.start()
    headers = {
        "Authorization": f"Bearer {issue_token(gateway.settings.auth, key, 60)}",
        "x-access-key": key,
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url_of(gateway)}/api/v1/write", data=write_request(), headers=headers) as r:
            assert r.status == 204, await r.text()
        async with http.post(f"{url_of(gateway)}/api/v1/write", data=b"not snappy", headers=headers) as r:
            assert r.status == 400
            assert "snappy" in (await r.json())["message"]
    await worker_process.caught_up()

    assert await metric_rows(worker_process, key) == [
        ["http_requests_total", "gauge", "", {"code": "200", "job": "api"}, 2, 25.0, 10.0, 15.0, 15.0],
        ["temperature", "gauge", "", {}, 1, -3.5, -3.5, -3.5, -3.5],
    ]
    assert gateway.metrics.malformed.labels("remote_write", "stale")._value.get() == 1
