"""The HTTP listener of a real ``sluice gateway`` process against clients that send too much or
too slowly: over-long and too many headers (431), garbage (400), headers trickled a byte a second
(closed after ``protocols.header_timeout``, even 1,500 of them at once, while other clients are
served as usual), a body trickled past ``protocols.body_timeout`` (408). Each refusal is counted;
the log holds no traceback (the fixture checks it once the process stopped)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.tansu import Tansu
from tests.integration.process_helpers import GatewayProcess, gateway_process

KEY = "ak_listener"
HEADER_TIMEOUT = 2.0
T0 = (time.time_ns() // 1_000_000_000 - 120) * 1_000_000_000


@pytest.fixture
def gateway(tansu: Tansu, tmp_path: Path) -> Iterator[GatewayProcess]:
    with gateway_process(tansu, tmp_path, [KEY],
                         protocols={"header_timeout": HEADER_TIMEOUT, "body_timeout": HEADER_TIMEOUT}) as process:
        yield process


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """Send ``request`` raw, read the answer to its end: its status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_over_long_headers_and_garbage_are_answered_431_and_400_quietly(gateway: GatewayProcess) -> None:
    start = b"POST /api/v2/write HTTP/1.1\r\nHost: x\r\n"
    long_header = start + b"X-Big: " + b"a" * 10_000 + b"\r\n\r\n"
    many_headers = start + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
    long_line = b"POST /api/v2/write?" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for request in (long_header, many_headers, long_line):
        status, body = exchange(gateway.http_port, request)
        assert status == 431, body
        assert body["message"].startswith("the request line or a header is longer than 8190 bytes, or there are more "
                                          "than 128 headers: "), body
    status, body = exchange(gateway.http_port, b"GARBAGE\r\n\r\n")
    assert status == 400 and body["message"].startswith("malformed HTTP request: "), body
    assert gateway.counter("http_refused_requests", reason="header_too_large") == 3
    assert gateway.counter("http_refused_requests", reason="bad_request") == 1
    assert "Error handling request" not in gateway.log_text()


async def write(gateway: GatewayProcess, n: int) -> float:
    """POST one line; the seconds it took (the answer must be 204)."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
    body = f"probe,n={n} v=1 {T0}".encode()
    writer.write(b"POST /api/v2/write HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 + f"Authorization: Token {gateway.token(KEY)}\r\nx-access-key: {KEY}\r\n".encode()
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 204"), answer[:300]
    return time.monotonic() - start


async def trickle(port: int, opened: asyncio.Event | None = None) -> float:
    """Send a request's headers a byte a second: seconds until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    headers = b"POST /api/v2/write HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nm v=1"
    try:
        for byte in headers:
            writer.write(bytes([byte]))
            try:
                # The server closes without answering: read returns b"" (or the peer resets).
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    return time.monotonic() - start
            except TimeoutError:
                continue
        raise AssertionError("the server waited for every byte of trickled headers")
    except ConnectionResetError:
        return time.monotonic() - start
    finally:
        writer.close()


def test_a_trickling_client_is_closed_after_the_header_timeout_while_others_are_served(gateway: GatewayProcess) -> None:
    async def run() -> tuple[float, list[float]]:
        slow = asyncio.create_task(trickle(gateway.http_port))
        fast = [await write(gateway, n) for n in range(5)]
        return await slow, fast

    closed_after, latencies = asyncio.run(run())
    assert HEADER_TIMEOUT - 0.1 <= closed_after <= HEADER_TIMEOUT + 1.5, closed_after
    assert max(latencies) < 1.0, latencies
    assert gateway.counter("http_refused_requests", reason="header_timeout") == 1


def test_1500_trickling_connections_do_not_stop_other_clients(gateway: GatewayProcess) -> None:
    async def run() -> tuple[list[float], list[float]]:
        slow = [asyncio.create_task(trickle(gateway.http_port)) for _ in range(1500)]
        await asyncio.sleep(0.5)  # all connected and trickling
        fast = [await write(gateway, n) for n in range(20)]
        return await asyncio.gather(*slow), fast

    start = time.monotonic()
    closed_after, latencies = asyncio.run(run())
    print(f"\n1,500 trickling connections closed after {min(closed_after):.1f}-{max(closed_after):.1f}s; "
          f"20 writes meanwhile: at most {max(latencies) * 1000:.0f} ms")
    assert max(closed_after) <= HEADER_TIMEOUT + 3, max(closed_after)
    assert time.monotonic() - start < HEADER_TIMEOUT + 6
    assert max(latencies) < 1.0, latencies
    assert gateway.counter("http_refused_requests", reason="header_timeout") == 1500


def test_a_body_trickled_past_the_body_timeout_is_answered_408(gateway: GatewayProcess) -> None:
    async def run() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
        start = time.monotonic()
        writer.write(b"POST /api/v2/write HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     + f"Authorization: Token {gateway.token(KEY)}\r\nx-access-key: {KEY}\r\n\r\n".encode())
        for _ in range(10):
            writer.write(b"m")
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
            except TimeoutError:
                continue
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            after = time.monotonic() - start
            answer = head + await reader.readexactly(length)
            writer.close()
            return answer, after
        raise AssertionError("the server waited for the whole trickled body")

    answer, after = asyncio.run(run())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["message"] == f"the body did not arrive within protocols.body_timeout ({HEADER_TIMEOUT:g}s)"
    assert HEADER_TIMEOUT - 0.1 <= after <= HEADER_TIMEOUT + 1.5
    assert gateway.counter("http_refused_requests", reason="body_timeout") == 1
