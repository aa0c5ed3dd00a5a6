"""Access keys on the config topic: `sluice keys` writes it, every gateway follows it live,
agents read and watch their configuration."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from sluice.cli.main import main
from sluice.client import ClientError, SluiceClient, log_envelope
from sluice.ingress import Gateway, issue_token
from sluice.keys import AccessKeyConfig, JsonKeyStore, Limits
from sluice.settings import Settings
from sluice.v1 import config_pb2, config_pb2_grpc
from tests.integration.gateway_helpers import add_key, metadata_for

T = (time.time_ns() // 10**9 - 60) * 10**9  # a minute ago: within every retention


@pytest_asyncio.fixture
async def two_gateways(settings: Settings) -> AsyncIterator[tuple[Gateway, Gateway]]:
    second = settings.model_copy(deep=True)
    async with Gateway(settings) as a, Gateway(second) as b:
        yield a, b


def sluice_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)


async def test_a_key_disabled_with_the_cli_is_refused_by_every_gateway(
    two_gateways: tuple[Gateway, Gateway], settings: Settings, unique: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    sluice_env(settings, monkeypatch)
    key = f"ak_{unique}"
    assert await asyncio.to_thread(main, ["keys", "add", key, "--bytes-per-second", "100000"]) == 0
    assert capsys.readouterr().out == f"{key}\n"
    token = issue_token(settings.auth, key, 60)
    for gw in two_gateways:
        deadline = time.monotonic() + 10
        while gw.keys.get(key) is None:
            assert time.monotonic() < deadline, "the gateway did not see the new key"
            await asyncio.sleep(0.05)
        async with SluiceClient(gw.address, key, token) as client:
            assert await client.send([log_envelope("before", timestamp=T)]) == 1

    assert await asyncio.to_thread(main, ["keys", "disable", key]) == 0
    assert capsys.readouterr().out == f"{key}: version 2\n"
    disabled_at = time.monotonic()
    for gw in two_gateways:
        async with SluiceClient(gw.address, key, token) as client:
            while True:
                try:
                    await client.send([log_envelope("after", timestamp=T)])
                except ClientError as exc:
                    assert (exc.code, exc.details) == (
                        grpc.StatusCode.PERMISSION_DENIED, f"access key '{key}' is disabled"
                    )
                    break
                assert time.monotonic() - disabled_at < 5, "the key still worked 5s after it was disabled"
                await asyncio.sleep(0.05)

    assert await asyncio.to_thread(main, ["keys", "list", "--format", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["access_key"], listed["enabled"], listed["version"], listed["limits"]["bytes_per_second"]) == (
        key, False, 2, 100000
    )
    assert await asyncio.to_thread(main, ["keys", "update", key, "--enable", "--events-per-second", "5"]) == 0
    assert capsys.readouterr().out == f"{key}: version 3\n"
    config = two_gateways[0].keys.get(key)
    deadline = time.monotonic() + 5
    while config is None or config.version != 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        config = two_gateways[0].keys.get(key)
    assert (config.enabled, config.limits.bytes_per_second, config.limits.events_per_second) == (True, 100000, 5)
    assert await asyncio.to_thread(main, ["keys", "update", "ak_nobody"]) == 1
    assert capsys.readouterr().err.startswith(
        f"sluice: no access key 'ak_nobody' in topic '{settings.kafka.config_topic}' at {settings.kafka.bootstrap}"
    )


async def test_get_and_watch_config(settings: Settings, unique: str) -> None:
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}", limits=Limits(bytes_per_second=10))
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = config_pb2_grpc.AgentConfigStub(channel)
            metadata = metadata_for(settings, key)
            got = await stub.GetConfig(config_pb2.GetConfigRequest(), metadata=metadata)
            assert (got.access_key, got.enabled, got.version, got.limits.bytes_per_second) == (key, True, 1, 10)
            assert [(r.stream, list(r.sinks)) for r in got.routes] == [
                ("events", ["file", "clickhouse"]), ("logs", ["file", "clickhouse"]),
                ("metrics_1m", ["clickhouse"]), ("metrics_1s", ["clickhouse"]), ("spans", ["clickhouse"]),
            ]
            watch = stub.WatchConfig(config_pb2.GetConfigRequest(access_key=key), metadata=metadata)
            first = await watch.read()
            assert (first.version, first.limits.bytes_per_second) == (1, 10)
            await gateway.keys.update(key, limits=Limits(bytes_per_second=20), routes={"logs": ["file"]})
            second = await asyncio.wait_for(watch.read(), 5)
            assert (second.version, second.limits.bytes_per_second) == (2, 20)
            assert [(r.stream, list(r.sinks)) for r in second.routes] == [("logs", ["file"])]
            watch.cancel()

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetConfig(config_pb2.GetConfigRequest(access_key="ak_other"), metadata=metadata)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert info.value.details() == f"access key '{key}' may not read the configuration of 'ak_other'"


async def test_the_seed_file_fills_an_empty_topic_and_never_overrides_it(settings: Settings, unique: str) -> None:
    seed = JsonKeyStore(settings.access_keys_path)
    seed.put(AccessKeyConfig(access_key=f"ak_seed_{unique}", description="from the file"))
    async with Gateway(settings) as gateway:
        assert gateway.keys.get(f"ak_seed_{unique}") is not None
        await gateway.keys.update(f"ak_seed_{unique}", description="changed on the topic")
    seed.put(AccessKeyConfig(access_key=f"ak_new_{unique}"))
    async with Gateway(settings) as gateway:
        assert [(c.access_key, c.description, c.version) for c in gateway.keys.list()] == [
            (f"ak_new_{unique}", "", 1),
            (f"ak_seed_{unique}", "changed on the topic", 2),
        ]
