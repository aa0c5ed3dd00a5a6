"""Routes and limits follow the access-key config topic live: a new record changes where the
next data goes, a tombstone brings the defaults back; the JSON file counts only while the
topic is empty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest_asyncio
from aiokafka import AIOKafkaProducer

from sluice.client import log_envelope
from sluice.ingress import Gateway
from sluice.keys import AccessKeyConfig
from sluice.keys.topic import encode_config
from sluice.settings import Settings
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.test_end_to_end import T0, client_for, read_lines


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    settings.kafka.config_topic = f"sluice.config.{unique}"
    async with Gateway(settings) as gw:
        yield gw


async def wait_for_config_records(worker: WorkerProcess, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (status := await asyncio.to_thread(worker.status))["config"]["records"] < n:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)


async def test_routes_follow_the_config_topic(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    settings = gateway.settings
    # The key as added: logs to ClickHouse only (the gateway wrote it to the topic).
    key = await add_key(gateway.keys, f"ak_{unique}", routes={"logs": ["clickhouse"]})
    worker_process.start()
    await wait_for_config_records(worker_process, 1)
    assert worker_process.status()["config"] == {"source": "topic", "records": 1, "invalid": 0, "keys": 1}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    await producer.start()

    async def publish(config: AccessKeyConfig) -> None:
        k, v = encode_config(config)
        await producer.send_and_wait(settings.kafka.config_topic, v, key=k)

    async def send(payload: str, offset: int) -> None:
        async with client_for(gateway, key) as client:
            assert await client.send([log_envelope(payload, timestamp=T0 + offset)]) == 1
        await worker_process.caught_up()

    try:
        await send("one", 1)
        await publish(AccessKeyConfig(access_key=key, routes={"logs": ["file"]}))
        await wait_for_config_records(worker_process, 2)
        await send("two", 2)
        await producer.send_and_wait(settings.kafka.config_topic, b"{not json", key=key.encode())
        await publish(AccessKeyConfig(access_key=key))  # routes unset: the defaults, file and ClickHouse
        await wait_for_config_records(worker_process, 4)
        await send("three", 3)
    finally:
        await producer.stop()

    assert await worker_process.query("SELECT payload FROM sluice.logs FINAL ORDER BY timestamp") == [
        ["one"], ["three"]
    ]
    lines = read_lines(settings.files_dir / key / "logs.jsonl")
    assert [line["payload"] for line in lines] == ["two", "three"]
    assert worker_process.status()["config"] == {"source": "topic", "records": 4, "invalid": 1, "keys": 1}
