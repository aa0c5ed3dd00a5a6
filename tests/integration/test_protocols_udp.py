"""statsd and Influx line protocol over UDP end to end, sent by published client libraries.

The ``statsd`` package sends Etsy statsd (counters with a sample rate, gauges and their +/-
deltas, timers, sets), Datadog's ``DogStatsd`` the tagged dialect (tags, histograms,
distributions); influxdb-client's ``Point`` writes the line protocol sent over UDP. A raw
datagram with a bad line among good ones shows the good ones are kept.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import statsd
from datadog.dogstatsd import DogStatsd
from influxdb_client import Point, WritePrecision

from sluice.ingress import Gateway
from sluice.settings import Settings
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.protocol_helpers import metric_rows, wait_for, with_protocols

NS = 1_000_000_000


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    async with Gateway(with_protocols(settings, unique)) as gw:
        yield gw


def send_udp(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", port))


async def test_statsd_clients_end_to_end(
    gateway: Gateway, worker_process: WorkerProcess, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = gateway.protocols.statsd
    assert listener is not None
    key = await add_key(gateway.keys, listener.access_key)
    worker_process.start()
    # Both clients sample with random(); pin it so that sampled calls are sent (at their rate).
    monkeypatch.setattr("statsd.client.base.random.random", lambda: 0.0)
    monkeypatch.setattr("datadog.dogstatsd.base.random", lambda: 0.0)

    etsy = statsd.StatsClient("127.0.0.1", listener.port)
    etsy.incr("jobs")                    # jobs:1|c
    etsy.incr("jobs", 3, rate=0.5)       # jobs:3|c|@0.5 -> 6
    etsy.gauge("pool", 10)               # pool:10|g
    etsy.gauge("pool", -3, delta=True)   # pool:-3|g -> 7
    etsy.gauge("pool", 5, delta=True)    # pool:+5|g -> 12
    etsy.timing("db", 12.5)              # db:12.500000|ms
    with etsy.pipeline() as pipe:        # one datagram: three set members, two distinct
        pipe.set("users", "ann")
        pipe.set("users", "bob")
        pipe.set("users", "ann")
    dog = DogStatsd("127.0.0.1", listener.port, disable_telemetry=True, origin_detection_enabled=False)
    dog.increment("hits", 2, tags=["route:/a", "canary"], sample_rate=0.25)  # -> 8
    dog.histogram("size", 100, tags=["route:/a"])
    dog.distribution("size", 300, tags=["route:/a"])
    send_udp(listener.port, b"good:1|c\nbad line\nalso:bad|zz\ngood:2|c\n")
    datagrams = 11
    await wait_for(lambda: listener.handled >= datagrams, "the statsd datagrams")
    await worker_process.caught_up()

    rows = await metric_rows(worker_process, key)
    assert rows == [
        ["db", "timer", "ms", {}, 1, 12.5, 12.5, 12.5, 12.5],
        ["good", "counter", "", {}, 2, 3.0, 1.0, 2.0, 0.0],
        ["hits", "counter", "", {"canary": "", "route": "/a"}, 1, 8.0, 8.0, 8.0, 0.0],
        ["jobs", "counter", "", {}, 2, 7.0, 1.0, 6.0, 0.0],
        ["pool", "gauge", "", {}, 3, 29.0, 7.0, 12.0, 12.0],
        ["size", "gauge", "", {"route": "/a"}, 2, 400.0, 100.0, 300.0, 300.0],
        ["users", "gauge", "", {}, 1, 2.0, 2.0, 2.0, 2.0],
    ]
    malformed = gateway.metrics.malformed
    assert malformed.labels("statsd", "syntax")._value.get() == 1
    assert malformed.labels("statsd", "type")._value.get() == 1


async def test_influx_line_protocol_over_udp(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    listener = gateway.protocols.influx_udp
    assert listener is not None
    key = await add_key(gateway.keys, listener.access_key)
    worker_process.start()
    t0 = (time.time_ns() // NS - 120) * NS  # closed windows, within the tables' TTL
    lines = [
        Point("cpu").tag("host", "web 1").field("usage", 0.25).field("cores", 4).time(t0, WritePrecision.NS),
        Point("cpu").tag("host", "web 1").field("usage", 0.75).field("cores", 4).time(t0 + 1, WritePrecision.NS),
        Point("door").tag("room", "a,b").field("open", True).field("note", 'say "hi"').time(t0 + 2, WritePrecision.NS),
    ]
    send_udp(listener.port, "\n".join(p.to_line_protocol() for p in lines[:2]).encode())
    send_udp(listener.port, (lines[2].to_line_protocol() + "\nno_fields\n").encode())
    await wait_for(lambda: listener.handled >= 2, "the line-protocol datagrams")
    await worker_process.caught_up()

    assert await metric_rows(worker_process, key) == [
        ["cpu.cores", "gauge", "", {"host": "web 1"}, 2, 8.0, 4.0, 4.0, 4.0],
        ["cpu.usage", "gauge", "", {"host": "web 1"}, 2, 1.0, 0.25, 0.75, 0.75],
        ["door.open", "gauge", "", {"room": "a,b"}, 1, 1.0, 1.0, 1.0, 1.0],
    ]
    events = await worker_process.query(
        "SELECT toUnixTimestamp64Nano(timestamp), title, body, tags FROM sluice.events FINAL "
        f"WHERE access_key = '{key}'"
    )
    assert events == [[t0 + 2, "door", '{"note": "say \\"hi\\""}', {"room": "a,b"}]]
    assert gateway.metrics.malformed.labels("influx_udp", "field")._value.get() == 1
