"""The deadline interceptor on a real local gRPC server with slow handlers of every kind, and
the server options built from the gateway settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from sluice.ingress.deadline import DeadlineInterceptor
from sluice.ingress.server_options import server_options
from sluice.settings import GatewaySettings


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(float(request))
    return b"done"


async def client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    total = 0.0
    async for request in requests:
        await asyncio.sleep(float(request))
        total += float(request)
    return str(total).encode()


async def server_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(5):
        await asyncio.sleep(float(request))
        yield str(i).encode()


async def server_stream_writes(request: bytes, context: grpc.aio.ServicerContext) -> None:
    for i in range(5):
        await asyncio.sleep(float(request))
        await context.write(str(i).encode())


async def refuses(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    raise AssertionError("unreachable")


HANDLERS = grpc.method_handlers_generic_handler(
    "test.Slow",
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ServerStreamWrites": grpc.unary_stream_rpc_method_handler(server_stream_writes),
        "Refuses": grpc.unary_unary_rpc_method_handler(refuses),
    },
)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[DeadlineInterceptor(call_timeout=0.3, stream_timeout=0.7)])
    server.add_generic_rpc_handlers([HANDLERS])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


def expired(limit: str) -> tuple[grpc.StatusCode, str]:
    return grpc.StatusCode.DEADLINE_EXCEEDED, f"the call exceeded the gateway's limit of {limit}s"


async def failure(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            async for _ in call:
                pass
        else:
            await call  # type: ignore[misc]
    return info.value.code(), info.value.details()


async def test_unary_calls(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary("/test.Slow/Unary")
    assert await call(b"0.05") == b"done"
    assert await failure(call(b"5")) == expired("0.3")


async def test_client_streams_get_the_stream_limit(channel: grpc.aio.Channel) -> None:
    call = channel.stream_unary("/test.Slow/ClientStream")
    assert await call(iter([b"0.2", b"0.2"])) == b"0.4"  # longer than call_timeout, within stream_timeout
    assert await failure(call(iter([b"0.2"] * 5))) == expired("0.7")


@pytest.mark.parametrize("method", ["ServerStream", "ServerStreamWrites"])
async def test_server_streams_get_the_stream_limit(channel: grpc.aio.Channel, method: str) -> None:
    call = channel.unary_stream(f"/test.Slow/{method}")
    assert [r async for r in call(b"0.01")] == [b"0", b"1", b"2", b"3", b"4"]
    received: list[bytes] = []
    slow = call(b"0.3")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for response in slow:
            received.append(response)
    assert (info.value.code(), info.value.details()) == expired("0.7")
    assert received == [b"0", b"1"]


async def test_handler_errors_pass_through(channel: grpc.aio.Channel) -> None:
    assert await failure(channel.unary_unary("/test.Slow/Refuses")(b"")) == (grpc.StatusCode.PERMISSION_DENIED, "no")
    assert (await failure(channel.unary_unary("/test.Slow/Missing")(b"")))[0] == grpc.StatusCode.UNIMPLEMENTED


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^timeouts must be > 0, got 0 and 1$"):
        DeadlineInterceptor(0, 1)


def test_server_options() -> None:
    assert server_options(GatewaySettings()) == [
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 100),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", 300_000),
    ]
    aged = dict(server_options(GatewaySettings(max_connection_age=3600, max_connection_age_grace=5.5)))
    assert (aged["grpc.max_connection_age_ms"], aged["grpc.max_connection_age_grace_ms"]) == (3_600_000, 5_500)
