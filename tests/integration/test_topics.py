"""`sluice topics` and `sluice keys top` against the real broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from sluice.cli.main import main
from sluice.client import SluiceClient, counter_envelope
from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from tests.integration.gateway_helpers import add_key


def run(*argv: str) -> int:
    return main(list(argv))


async def test_create_describe_and_grow(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert await asyncio.to_thread(run, "topics", "create", "--partitions", "3", "--format", "json") == 0
    described = json.loads(capsys.readouterr().out)
    assert [(p["partition"], p["replicas"], p["end_offset"]) for p in described] == [(0, 1, 0), (1, 1, 0), (2, 1, 0)]
    assert await asyncio.to_thread(run, "topics", "grow", "--partitions", "2") == 1
    assert "has 3 partitions already; Kafka cannot shrink a topic" in capsys.readouterr().err
    code = await asyncio.to_thread(run, "topics", "grow", "--partitions", "5")
    out, err = capsys.readouterr()
    if code == 0:
        assert out.startswith(f"{settings.kafka.raw_topic}: 3 -> 5 partitions\nnote: records are spread")
        assert await asyncio.to_thread(run, "topics", "describe", "--format", "json") == 0
        assert len(json.loads(capsys.readouterr().out)) == 5
    else:  # the broker refused CreatePartitions: the reason is said, nothing else changed
        assert err.startswith(f"sluice: growing '{settings.kafka.raw_topic}' failed: ")
        assert await asyncio.to_thread(run, "topics", "describe", "--format", "json") == 0
        assert len(json.loads(capsys.readouterr().out)) == 3


async def test_keys_top_shows_rates_and_recommends_shards(settings: Settings, unique: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    async with Gateway(settings) as gateway:
        hot = await add_key(gateway.keys, f"ak_hot_{unique}")
        cold = await add_key(gateway.keys, f"ak_cold_{unique}")
        for key, n in ((hot, 6000), (cold, 60)):
            async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60)) as client:
                assert await client.send([counter_envelope("c", 1, source_id=f"s{i}") for i in range(n)]) == n
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert await asyncio.to_thread(
        run, "keys", "top", "--window", "60", "--per-shard", "40", "--format", "json"
    ) == 0
    rows = {r["access_key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[hot]["envelopes/s"] == 100.0 and rows[cold]["envelopes/s"] == 1.0
    assert (rows[hot]["shards_seen"], rows[hot]["shards_recommended"]) == (1, 3)
    assert rows[cold]["shards_recommended"] == 1
    assert list(rows) == [hot, cold]
