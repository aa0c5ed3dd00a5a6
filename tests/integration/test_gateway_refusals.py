"""Calls the gateway refuses, through real gRPC: the exact status and message, nothing published,
and the refusal counted in the gateway's metrics (the call by code; its envelopes, when it read them).

All tests share one gateway (and one topic, checked empty at the end of the module).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
import pytest_asyncio
from pydantic import SecretStr

from sluice.client import ClientError, SluiceClient, counter_envelope, log_envelope, timer_envelope
from sluice.ingress import Gateway, issue_token
from sluice.keys import Limits
from sluice.settings import Settings
from sluice.tansu import Tansu
from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from tests.integration.gateway_helpers import (
    CallMetadata,
    Ledger,
    MetricSamples,
    add_key,
    assert_accounted,
    counters,
    metadata_for,
    nan_gauge,
    read_topic,
    scrape,
    singles,
)

@pytest.fixture(scope="module")
def shared_settings(tansu: Tansu, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    unique = os.urandom(5).hex()
    return Settings(
        data_dir=tmp_path_factory.mktemp("gateway"),
        kafka={
            "bootstrap": tansu.bootstrap,
            "raw_topic": f"sluice.raw.{unique}",
            "config_topic": f"sluice.config.{unique}",
            "partitions": 2,
        },
        auth={"jwt_secret": "shared-secret-" + os.urandom(32).hex()},
        gateway={"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0"},
        metrics_key_labels=True,  # the tests account per key
    )  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module")
async def shared(shared_settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(shared_settings) as gw:
        await add_key(gw.keys, "ak_shared_ok", shards=3, limits=Limits(bytes_per_second=1000), version=1)
        await add_key(gw.keys, "ak_shared_other")
        await add_key(gw.keys, "ak_shared_off", enabled=False)
        yield gw
    records = await read_topic(shared_settings.kafka.bootstrap, shared_settings.kafka.raw_topic)
    assert records == [], "a refused call published something"


@pytest_asyncio.fixture(scope="module")
async def channel(shared: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(shared.address) as ch:
        yield ch


class Accounts:
    """The shared gateway's metrics before a test, to check what the test's calls added."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.before: MetricSamples = scrape(port)

    async def check(self, key: str, calls: dict[str, int], *, sent: int = 0, rejected: dict[str, int] | None = None) -> None:
        """Nothing of ``key`` stored; ``sent`` envelopes read and ``rejected`` by code; ``calls`` refused by code."""
        await assert_accounted(self.port, key, sent=sent, acknowledged=0, rejected=rejected or {},
                               refused_calls=calls, since=Ledger.of(self.before, key))


@pytest.fixture
def accounts(shared: Gateway) -> Accounts:
    assert shared.metrics_port
    return Accounts(shared.metrics_port)


async def call(channel: grpc.aio.Channel, method: str, metadata: CallMetadata) -> object:
    """Call one RPC with a small valid request."""
    ingress = ingress_pb2_grpc.IngressStub(channel)
    if method == "Send":
        return await ingress.Send(EnvelopeBatch(batch=counters(2)), metadata=metadata)
    if method == "Sender":
        return await ingress.Sender(singles(counters(2)), metadata=metadata)
    if method == "BatchSender":
        return await ingress.BatchSender(iter([EnvelopeBatch(batch=counters(2))]), metadata=metadata)
    config = config_pb2_grpc.AgentConfigStub(channel)
    return await config.GetConfig(config_pb2.GetConfigRequest(), metadata=metadata)


async def refused(channel: grpc.aio.Channel, method: str, metadata: CallMetadata) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, method, metadata)
    return info.value.code(), info.value.details()


METHODS = ["Send", "Sender", "BatchSender", "GetConfig"]


@pytest.mark.parametrize("method", METHODS)
async def test_missing_token(channel: grpc.aio.Channel, accounts: Accounts, method: str) -> None:
    assert await refused(channel, method, (("x-access-key", "ak_shared_ok"),)) == (
        grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization' metadata: expected 'Bearer <JWT>'"
    )
    await accounts.check("ak_shared_ok", {"UNAUTHENTICATED": 1})  # refused before reading a message


@pytest.mark.parametrize("method", METHODS)
async def test_wrong_token(channel: grpc.aio.Channel, accounts: Accounts, shared_settings: Settings, method: str) -> None:
    other = shared_settings.auth.model_copy(update={"jwt_secret": SecretStr("x" * 64)})
    token = issue_token(other, "ak_shared_ok", 60)
    metadata = (("authorization", f"Bearer {token}"), ("x-access-key", "ak_shared_ok"))
    assert await refused(channel, method, metadata) == (
        grpc.StatusCode.UNAUTHENTICATED, "token signature is invalid"
    )
    await accounts.check("ak_shared_ok", {"UNAUTHENTICATED": 1})


@pytest.mark.parametrize("method", METHODS)
async def test_expired_token(channel: grpc.aio.Channel, accounts: Accounts, shared_settings: Settings, method: str) -> None:
    metadata = metadata_for(shared_settings, "ak_shared_ok", now=time.time() - 3600)
    assert await refused(channel, method, metadata) == (grpc.StatusCode.UNAUTHENTICATED, "token has expired")
    await accounts.check("ak_shared_ok", {"UNAUTHENTICATED": 1})


async def test_token_of_another_key(channel: grpc.aio.Channel, accounts: Accounts, shared_settings: Settings) -> None:
    metadata = metadata_for(shared_settings, "ak_shared_ok", token_key="ak_shared_other")
    assert await refused(channel, "Send", metadata) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "token subject 'ak_shared_other' does not match x-access-key 'ak_shared_ok'",
    )
    await accounts.check("ak_shared_ok", {"UNAUTHENTICATED": 1})


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("ak_shared_nobody", "unknown access key 'ak_shared_nobody'"),
        ("ak_shared_off", "access key 'ak_shared_off' is disabled"),
    ],
)
async def test_unknown_and_disabled_keys(
    channel: grpc.aio.Channel, accounts: Accounts, shared_settings: Settings, method: str, key: str, message: str
) -> None:
    metadata = metadata_for(shared_settings, key)
    assert await refused(channel, method, metadata) == (grpc.StatusCode.PERMISSION_DENIED, message)
    await accounts.check(key, {"PERMISSION_DENIED": 1})


@pytest_asyncio.fixture
async def shared_client(shared: Gateway) -> AsyncIterator[SluiceClient]:
    token = issue_token(shared.settings.auth, "ak_shared_ok", 60)
    async with SluiceClient(shared.address, "ak_shared_ok", token) as c:
        yield c


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (nan_gauge(), "envelope[2].gauge.metrics['cpu'].value: NaN is not allowed"),
        (counter_envelope("", 1), "envelope[2].counter.name: must not be empty"),
        (timer_envelope("t", 5, 4), "envelope[2].timer.stop: 4 is before start 5"),
        (log_envelope("x", timestamp=-1), "envelope[2].timestamp: -1 is negative"),
        (
            Envelope(source_id="nothing"),
            "envelope[2]: no message is set (expected one of log, counter, gauge, timer, event, span)",
        ),
        (log_envelope("x", tags={f"t{i}": "v" for i in range(65)}), "envelope[2].tags: 65 tags exceed the limit of 64"),
    ],
)
async def test_invalid_envelopes_are_refused(
    shared_client: SluiceClient, accounts: Accounts, envelope: Envelope, message: str
) -> None:
    with pytest.raises(ClientError) as info:
        await shared_client.send(counters(2) + [envelope] + counters(1))
    assert (info.value.code, info.value.details, info.value.accepted) == (
        grpc.StatusCode.INVALID_ARGUMENT, message, 0
    )
    assert str(info.value) == f"INVALID_ARGUMENT: {message}"
    assert not info.value.retriable
    # The whole batch was read, and all of it refused with the call.
    await accounts.check("ak_shared_ok", {"INVALID_ARGUMENT": 1}, sent=4, rejected={"INVALID_ARGUMENT": 4})


async def test_send_batch_too_long(shared_client: SluiceClient, accounts: Accounts, shared_settings: Settings) -> None:
    limit = shared_settings.gateway.max_batch_envelopes
    with pytest.raises(ClientError) as info:
        await shared_client.send(counters(limit + 1))
    assert (info.value.code, info.value.details) == (
        grpc.StatusCode.INVALID_ARGUMENT, f"batch: {limit + 1} envelopes exceed the limit of {limit} per batch"
    )
    await accounts.check(
        "ak_shared_ok", {"INVALID_ARGUMENT": 1}, sent=limit + 1, rejected={"INVALID_ARGUMENT": limit + 1}
    )


async def test_get_config_returns_the_callers_config(shared_client: SluiceClient) -> None:
    expected = config_pb2.AgentConfigResponse(
        access_key="ak_shared_ok",
        enabled=True,
        shards=3,
        limits=config_pb2.Limits(bytes_per_second=1000, events_per_second=0),
        routes=[
            config_pb2.Route(stream="events", sinks=["file", "clickhouse"]),
            config_pb2.Route(stream="logs", sinks=["file", "clickhouse"]),
            config_pb2.Route(stream="metrics_1m", sinks=["clickhouse"]),
            config_pb2.Route(stream="metrics_1s", sinks=["clickhouse"]),
            config_pb2.Route(stream="spans", sinks=["clickhouse"]),
        ],
        version=1,
    )
    assert await shared_client.get_config() == expected
    assert await shared_client.get_config("ak_shared_ok") == expected


async def test_get_config_of_another_key_is_refused(shared_client: SluiceClient, accounts: Accounts) -> None:
    with pytest.raises(ClientError) as info:
        await shared_client.get_config("ak_shared_other")
    assert (info.value.code, info.value.details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "access key 'ak_shared_ok' may not read the configuration of 'ak_shared_other'",
    )
    await accounts.check("ak_shared_ok", {"PERMISSION_DENIED": 1})


# --- forged and malformed tokens (RFC 8725) ------------------------------------------------


def forged_metadata(token: str) -> CallMetadata:
    return (("authorization", f"Bearer {token}"), ("x-access-key", "ak_shared_ok"))


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (
            jwt.encode({"sub": "ak_shared_ok", "iat": int(time.time()), "exp": int(time.time()) + 600}, None, algorithm="none"),
            "token algorithm 'none' is not allowed (allowed: HS256)",
        ),
        ("a.b.c", "malformed token: Invalid header padding"),
        ("not-a-jwt", "malformed token: Not enough segments"),
    ],
)
async def test_forged_and_garbage_tokens(channel: grpc.aio.Channel, accounts: Accounts, token: str, message: str) -> None:
    assert await refused(channel, "Send", forged_metadata(token)) == (grpc.StatusCode.UNAUTHENTICATED, message)
    await accounts.check("ak_shared_ok", {"UNAUTHENTICATED": 1})


async def test_token_not_valid_yet_and_unknown_kid(
    channel: grpc.aio.Channel, accounts: Accounts, shared_settings: Settings
) -> None:
    secret = shared_settings.auth.jwt_secret
    assert secret is not None
    now = int(time.time())
    early = jwt.encode({"sub": "ak_shared_ok", "iat": now, "exp": now + 600, "nbf": now + 300}, secret.get_secret_value())
    assert await refused(channel, "Send", forged_metadata(early)) == (
        grpc.StatusCode.UNAUTHENTICATED, "token is not valid yet ('nbf')"
    )
    keyed = jwt.encode({"sub": "ak_shared_ok", "iat": now, "exp": now + 60}, secret.get_secret_value(), headers={"kid": "k9"})
    assert await refused(channel, "GetConfig", forged_metadata(keyed)) == (
        grpc.StatusCode.UNAUTHENTICATED, "unknown key id 'k9'"
    )
    await accounts.check("ak_shared_ok", {"UNAUTHENTICATED": 2})
