"""Line protocol the reference decoder accepts, and what it refuses, end to end over HTTP: the
entries reach ClickHouse with the values the reference decodes, the refused ones are counted."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.protocol_helpers import metric_rows, with_protocols

NS = 1_000_000_000


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    async with Gateway(with_protocols(settings, unique)) as gw:
        yield gw


async def test_reference_line_protocol_is_stored_as_decoded(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    assert gateway.protocols.http is not None
    key = await add_key(gateway.keys, f"ak_influx_conf_{unique}")
    worker_process.start()
    t0 = (time.time_ns() // NS - 120) * NS  # closed windows, within the tables' TTL
    body = (
        f"   # a comment after spaces\n"
        f"  cpu,host=a   usage=0.5,cores=4i    {t0}   \r\n"  # spaces before the entry and its sections
        f'log,host=a msg="line one\nline two",esc="tab\\there" {t0 + 1}\n'  # a string over two lines
        f"cpu,host=a,host=b usage=9 {t0}\n"  # a tag key given twice: refused
        f"cpu,host=a usage=9 -5\n"  # before the epoch: line protocol, but not storable
        f"cpu,host=a usage=0.25 {t0 + 2}"
    ).encode()
    headers = {"Authorization": f"Token {issue_token(gateway.settings.auth, key, 60)}"}
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{gateway.protocols.http.port}/api/v2/write"
        async with http.post(url, data=body, headers=headers) as response:
            status, text = response.status, await response.text()
    await worker_process.caught_up()

    assert status == 400 and "partial write: 2 rejected, 3 stored; first: tag key 'host' is given twice" in text, text
    assert await metric_rows(worker_process, key) == [
        ["cpu.cores", "gauge", "", {"host": "a"}, 1, 4.0, 4.0, 4.0, 4.0],
        ["cpu.usage", "gauge", "", {"host": "a"}, 2, 0.75, 0.25, 0.5, 0.25],
    ]
    events = await worker_process.query(
        f"SELECT toUnixTimestamp64Nano(timestamp), title, body, tags FROM sluice.events FINAL WHERE access_key = '{key}'"
    )
    assert [[ts, title, json.loads(body), tags] for ts, title, body, tags in events] == [
        [t0 + 1, "log", {"esc": "tab\there", "msg": "line one\nline two"}, {"host": "a"}],
    ]
    malformed = gateway.metrics.malformed
    assert (malformed.labels("influx", "tag")._value.get(), malformed.labels("influx", "timestamp")._value.get()) == (1, 1)
