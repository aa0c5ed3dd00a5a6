"""HTTP writes with fakes behind them: Content-Encoding decoding, and bodies that are not what
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
from sluice.ingress.protocols.http import HttpWrites, decompressed
from sluice.ingress.protocols.ingest import Admitted
from sluice.ingress.protocols.lines import Malformed
from sluice.keys import AccessKeyConfig
from sluice.v1.envelope_pb2 import Envelope

LINES = b"m f=1 1700000000000000000\nm f=2 1700000000000000001"


@pytest.mark.parametrize(("encoding", "body"), [
    ("", LINES), ("identity", LINES), ("gzip", gzip.compress(LINES)), ("GZIP ", gzip.compress(LINES)),
    ("deflate", zlib.compress(LINES)), ("x-gzip", gzip.compress(LINES)),
])
def test_bodies_are_decompressed(encoding: str, body: bytes) -> None:
    assert decompressed(body, encoding, 1024) == LINES


@pytest.mark.parametrize(("encoding", "body", "reason", "message"), [
    ("gzip", b"not gzip", "encoding", "the body is not valid gzip data: Error -3 while decompressing data: incorrect header check"),
    ("deflate", b"", "encoding", "the deflate body is truncated"),
    ("gzip", gzip.compress(LINES)[:-4], "encoding", "the gzip body is truncated"),
    ("gzip", gzip.compress(LINES) + b"xx", "encoding", "2 byte(s) follow the gzip data"),
    ("gzip", gzip.compress(b"0" * 10_000), "too_large", "the decompressed body exceeds 1024 bytes"),
    ("br", b"", "encoding", "unsupported Content-Encoding 'br'; expected gzip, deflate or identity"),
])
def test_bodies_that_are_not_what_they_say_are_malformed(encoding: str, body: bytes, reason: str, message: str) -> None:
    with pytest.raises(Malformed) as info:
        decompressed(body, encoding, 1024)
    assert (info.value.reason, info.value.message) == (reason, message)


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
    http = HttpWrites("127.0.0.1", 0, Everyone(), FakeIngest(), max_body_bytes=4096)  # type: ignore[arg-type]
    await http.start()
    yield http
    await http.stop()


@pytest.mark.parametrize(("path", "encoding", "body", "message"), [
    ("/api/v2/write", "deflate", b"", "the deflate body is truncated"),
    ("/api/v2/write", "gzip", b"\x1f\x8b garbage", "the body is not valid gzip data: Error -3 while decompressing data: unknown compression method"),
    ("/write", "zstd", b"x", "unsupported Content-Encoding 'zstd'; expected gzip, deflate or identity"),
    ("/api/v1/write", "gzip", gzip.compress(b"x"), "unsupported Content-Encoding 'gzip'; remote write is snappy"),
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
