"""The Loki push API end to end: loki-logger-handler (PyPI; JSON, gzip, structured metadata, a
bearer token and ``X-Scope-OrgID``) and snappy protobuf ``logproto.PushRequest`` bodies encoded
field by field here from Loki's ``push.proto`` (no PyPI client sends protobuf), with basic auth.
Stored envelopes are read back from the raw topic; refusals are answered and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import cramjam
import pytest_asyncio
from loki_logger_handler.loki_logger_handler import LokiLoggerHandler

from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import Envelope, Log
from tests.integration.gateway_helpers import add_key, assert_accounted, batch_of, read_topic
from tests.integration.protocol_helpers import with_protocols

NS = 1_000_000_000
T0 = (time.time_ns() // NS - 120) * NS


@pytest_asyncio.fixture
async def gateway(settings: Settings, unique: str) -> AsyncIterator[Gateway]:
    async with Gateway(with_protocols(settings, unique)) as gw:
        yield gw


def push_url(gateway: Gateway) -> str:
    assert gateway.protocols.http is not None
    return f"http://127.0.0.1:{gateway.protocols.http.port}/loki/api/v1/push"


async def stored(gateway: Gateway, key: str, count: int) -> list[Envelope]:
    """The envelopes of ``key`` on the raw topic, once there are ``count`` of them."""
    deadline = time.monotonic() + 20
    while True:
        records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
        found = [env for r in records if r.key == key.encode() for env in batch_of(r)]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} envelopes stored"
        await asyncio.sleep(0.2)


def log_envelope(ts: int, line: str, tags: dict[str, str], source: str = "", instance: str = "") -> Envelope:
    env = Envelope(timestamp=ts, source_id=source, instance_id=instance, tags=tags)
    env.log.CopyFrom(Log(payload=line.encode(), type=Log.OUT))
    return env


async def test_loki_logger_handler_pushes_json_with_structured_metadata(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_loki_{unique}")
    token = issue_token(gateway.settings.auth, key, 60)
    handler = LokiLoggerHandler(
        url=push_url(gateway), labels={"service_name": "billing", "env": "prod"}, timeout=0.2,
        additional_headers={"Authorization": f"Bearer {token}", "X-Scope-OrgID": key},
        enable_structured_loki_metadata=True, loki_metadata={"region": "eu"}, loki_metadata_keys=["trace_id"],
    )
    logger = logging.getLogger(f"loki-{unique}")
    logger.propagate = False
    logger.addHandler(handler)
    before = time.time_ns()
    logger.warning("invoice %s sent", 7, extra={"trace_id": "abc123"})
    logger.warning("second")
    envelopes = await stored(gateway, key, 2)
    logger.removeHandler(handler)
    after = time.time_ns()
    assert all(before - 1000 <= env.timestamp <= after for env in envelopes)
    lines = [json.loads(env.log.payload) for env in envelopes]
    assert [(line["message"], line["level"]) for line in lines] == [("invoice 7 sent", "WARNING"), ("second", "WARNING")]
    assert "trace_id" not in lines[0]  # moved to structured metadata
    labels = {"service_name": "billing", "env": "prod"}
    assert [(e.source_id, e.instance_id, dict(e.tags), e.log.type) for e in envelopes] == [
        ("billing", "", {**labels, "region": "eu", "trace_id": "abc123"}, Log.OUT),
        ("billing", "", {**labels, "region": "eu"}, Log.OUT),
    ]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def push_request(streams: list[tuple[str, list[tuple[int, str, dict[str, str]]]]]) -> bytes:
    """logproto.PushRequest{streams: [StreamAdapter{labels, entries: [EntryAdapter{timestamp, line,
    structuredMetadata}]}]}, snappy block-compressed, as Promtail sends it."""
    body = b""
    for labels, entries in streams:
        stream = _field(1, labels.encode())
        for ts, line, metadata in entries:
            entry = _field(1, _field(1, ts // NS) + _field(2, ts % NS)) + _field(2, line.encode())
            for name, value in metadata.items():
                entry += _field(3, _field(1, name.encode()) + _field(2, value.encode()))
            stream += _field(2, entry)
        body += _field(1, stream)
    return bytes(cramjam.snappy.compress_raw(body))


async def test_snappy_protobuf_pushes_with_basic_auth_and_refusals(gateway: Gateway, unique: str) -> None:
    key = await add_key(gateway.keys, f"ak_lokipb_{unique}")
    token = issue_token(gateway.settings.auth, key, 60)
    basic = {"Authorization": aiohttp.encode_basic_auth(key, token)}
    pb = {"Content-Type": "application/x-protobuf"}
    body = push_request([
        ('{job="api", instance="pod-1", path="C:\\\\tmp \\"x\\""}', [(T0 + 1, "GET / 200", {"user": "u1"}), (T0 + 2, "ok", {})]),
        ("{}", [(T0 + 3, "no labels", {})]),
    ])
    async with aiohttp.ClientSession() as http:
        async def post(data: bytes, headers: dict[str, str], auth: dict[str, str] = basic) -> tuple[int, str]:
            async with http.post(push_url(gateway), data=data, headers=headers | auth) as r:
                return r.status, (await r.text())

        assert await post(body, pb | {"X-Scope-OrgID": key}) == (204, "")
        status, text = await post(body, pb | {"X-Scope-OrgID": "someone-else"})
        assert (status, json.loads(text)["message"]) == (403, "X-Scope-OrgID 'someone-else' is not the token's access key")
        status, text = await post(body, pb, auth={})
        assert (status, json.loads(text)["code"]) == (401, "unauthorized")
        status, text = await post(push_request([("{job=api}", [(T0, "x", {})])]), pb)
        assert (status, json.loads(text)["message"]) == (400, "stream labels '{job=api}' do not parse at 'job=api'")
        status, text = await post(b"\xff\x00garbage", pb)
        assert status == 400 and json.loads(text)["message"].startswith("body is not snappy"), text
        status, text = await post(b'{"streams": [{"stream": {"a": 1}, "values": []}]}', {"Content-Type": "application/json"})
        assert (status, json.loads(text)["message"]) == (400, "a stream's labels must be an object of strings")
    tags = {"job": "api", "instance": "pod-1", "path": 'C:\\tmp "x"'}
    assert await stored(gateway, key, 3) == [
        log_envelope(T0 + 1, "GET / 200", {**tags, "user": "u1"}, "api", "pod-1"),
        log_envelope(T0 + 2, "ok", tags, "api", "pod-1"),
        log_envelope(T0 + 3, "no labels", {}, key),
    ]
    assert gateway.metrics_port
    await assert_accounted(gateway.metrics_port, key, sent=3, acknowledged=3,
                           refused_calls={"PERMISSION_DENIED": 1, "UNAUTHENTICATED": 1, "INVALID_ARGUMENT": 3})
