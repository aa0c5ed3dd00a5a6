"""HTTP writes with fakes behind them: bodies that are not what
their headers say answered 400 with a message naming the problem (found by fuzzing: aiohttp's own
decoding answered a bare 400, such as ``deflate``, and logged a traceback)."""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest
import pytest_asyncio

from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.decoding import DecodingBudget
from sluice.ingress.protocols.http import HttpWrites
from sluice.ingress.protocols.ingest import Admitted
from sluice.keys import AccessKeyConfig
from sluice.settings import ProtocolsSettings
from sluice.v1.envelope_pb2 import Envelope

LINES = b"m f=1 1700000000000000000\nm f=2 1700000000000000001"


class FakeIngest:
    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        self.published: list[int] = []

    async def publish(self, config: AccessKeyConfig, envelopes: Sequence[Envelope], entry_point: str) -> Admitted:
        self.published.append(len(envelopes))
        return Admitted(accepted=len(envelopes))


class Everyone:
    def authenticate(self, metadata: object) -> AccessKeyConfig:
        return AccessKeyConfig(access_key="ak_http")


@pytest_asyncio.fixture
async def writes() -> AsyncIterator[HttpWrites]:
    http = HttpWrites(
        "127.0.0.1", 0, Everyone(), FakeIngest(),  # type: ignore[arg-type]
        settings=ProtocolsSettings(max_http_body_bytes=4096), decoding=DecodingBudget(1 << 20, 1.0),
    )
    await http.start()
    yield http
    await http.stop()


@pytest.mark.parametrize(("path", "encoding", "body", "message"), [
    ("/api/v2/write", "deflate", b"", "the deflate body is truncated"),
    ("/api/v2/write", "gzip", b"\x1f\x8b garbage", "the body is not valid gzip data: Error -3 while decompressing data: unknown compression method"),
    ("/write", "br", b"x", "unsupported Content-Encoding 'br'; expected gzip, deflate, zstd or identity"),
    ("/write", "zstd", b"x", "the body is not valid zstd data: "),
    ("/api/v1/write", "gzip", gzip.compress(b"x"), "unsupported Content-Encoding 'gzip'; expected snappy"),
])
async def test_a_body_not_in_its_encoding_is_answered_400_naming_it(
    writes: HttpWrites, path: str, encoding: str, body: bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.post(f"http://127.0.0.1:{writes.port}{path}", data=body,
                             headers={"Content-Encoding": encoding, "Authorization": "Bearer x", "x-access-key": "ak_http"}) as r:
            assert r.status == 400
            assert (await r.json())["message"].startswith(message)
    assert caplog.records == []
    entry_point = "RemoteWrite" if path == "/api/v1/write" else "Influx.HTTP"
    assert writes._ingest.metrics.rejected_calls.labels(entry_point, "INVALID_ARGUMENT")._value.get() == 1


async def test_a_gzipped_write_is_stored(writes: HttpWrites) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{writes.port}/api/v2/write", data=gzip.compress(LINES),
                             headers={"Content-Encoding": "gzip", "Authorization": "Bearer x", "x-access-key": "ak_http"}) as r:
            assert r.status == 204
    assert writes._ingest.published == [2]  # type: ignore[attr-defined]


def headers(**more: str) -> dict[str, str]:
    return {"Authorization": "Bearer x", "x-access-key": "ak_http", **more}


async def test_a_body_over_the_limit_as_sent_is_answered_413_and_counted(writes: HttpWrites) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{writes.port}/api/v2/write", data=b"m f=1\n" * 1000, headers=headers()) as r:
            assert (r.status, (await r.json())["message"]) == (
                413, "the body is larger than protocols.max_http_body_bytes (4096 bytes)"
            )
    metrics = writes._ingest.metrics
    assert metrics.decoding_refused.labels("Influx.HTTP", "too_large")._value.get() == 1
    assert metrics.rejected_calls.labels("Influx.HTTP", "RESOURCE_EXHAUSTED")._value.get() == 1


async def test_a_write_without_room_in_the_decoding_budget_is_answered_503_with_a_retry_after(
    writes: HttpWrites,
) -> None:
    budget = writes._decoding
    async with budget.reserve(budget.max_bytes - 1000, "another request"):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{writes.port}/api/v2/write", data=LINES, headers=headers()) as r:
                assert (r.status, r.headers["Retry-After"]) == (503, "1")
                assert (await r.json())["message"].startswith("the gateway is decoding ")
    assert budget.used == 0
    assert writes._ingest.metrics.decoding_refused.labels("Influx.HTTP", "decoding_busy")._value.get() == 1
    assert writes._ingest.published == []  # type: ignore[attr-defined]


async def test_a_write_costing_more_than_the_whole_decoding_budget_is_answered_413(writes: HttpWrites) -> None:
    writes._decoding.max_bytes = len(LINES) * 25 - 1  # Influx costs 25 times its decoded size
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{writes.port}/api/v2/write", data=LINES, headers=headers()) as r:
            assert r.status == 413
            assert (await r.json())["message"].startswith("decoding this Influx.HTTP request would take about ")
    assert writes._ingest.metrics.decoding_refused.labels("Influx.HTTP", "over_budget")._value.get() == 1
