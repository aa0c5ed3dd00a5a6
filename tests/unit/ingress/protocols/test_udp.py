"""The UDP listener with a fake admission path: batching, unknown keys, and a parser that fails."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import pytest

from sluice.exceptions import ConfigurationError
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.protocols.ingest import Admitted
from sluice.ingress.protocols.statsd import Parsed, StatsdParser
from sluice.ingress.protocols.udp import UdpListener
from sluice.keys import AccessKeyConfig
from sluice.v1.envelope_pb2 import Envelope


class FakeIngest:
    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        self.published: list[tuple[str, int]] = []

    async def publish(self, config: AccessKeyConfig, envelopes: Sequence[Envelope], entry_point: str) -> Admitted:
        self.published.append((config.access_key, len(envelopes)))
        return Admitted(accepted=len(envelopes))


class Keys:
    def __init__(self, *keys: str) -> None:
        self.keys = {k: AccessKeyConfig(access_key=k) for k in keys}

    def get(self, key: str) -> AccessKeyConfig | None:
        return self.keys.get(key)

    def list(self) -> list[AccessKeyConfig]:
        return list(self.keys.values())


async def run(listener: UdpListener, *datagrams: bytes) -> None:
    await listener.start()
    target = listener.handled + len(datagrams)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for data in datagrams:
                sock.sendto(data, ("127.0.0.1", listener.port))
        async with asyncio.timeout(5):
            while listener.handled < target:
                await asyncio.sleep(0.01)
    finally:
        await listener.stop()


async def test_datagrams_are_published_and_bad_lines_counted() -> None:
    ingest = FakeIngest()
    listener = UdpListener("statsd", ("127.0.0.1", 0), "ak_udp", StatsdParser().parse, ingest, Keys("ak_udp"))  # type: ignore[arg-type]
    await run(listener, b"a:1|c\nb:2|c", b"junk\nc:1|g")
    assert sum(n for _, n in ingest.published) == 3
    assert {k for k, _ in ingest.published} == {"ak_udp"}
    assert ingest.metrics.malformed.labels("statsd", "syntax")._value.get() == 1


async def test_an_unknown_key_drops_and_counts() -> None:
    ingest = FakeIngest()
    listener = UdpListener("statsd", ("127.0.0.1", 0), "ak_gone", StatsdParser().parse, ingest, Keys())  # type: ignore[arg-type]
    await run(listener, b"a:1|c")
    assert ingest.published == []
    assert ingest.metrics.udp_dropped.labels("statsd", "unknown_key")._value.get() == 1


def listener_with_a_bug(ingest: FakeIngest) -> UdpListener:
    """A statsd listener whose parser raises on the datagram ``boom``."""
    statsd = StatsdParser()

    def parse(data: bytes) -> Parsed:
        if data == b"boom":
            raise RuntimeError("a bug")
        return statsd.parse(data)

    return UdpListener("statsd", ("127.0.0.1", 0), "ak_udp", parse, ingest, Keys("ak_udp"))  # type: ignore[arg-type]


async def test_a_failing_parser_does_not_stop_the_listener() -> None:
    ingest = FakeIngest()
    listener = listener_with_a_bug(ingest)
    await run(listener, b"boom")
    await run(listener, b"a:1|c")
    assert ingest.metrics.udp_dropped.labels("statsd", "error")._value.get() == 1
    assert ingest.published == [("ak_udp", 1)]


@pytest.mark.parametrize("key", ["", "no spaces allowed"])
def test_the_access_key_is_required_and_checked(key: str) -> None:
    with pytest.raises(ConfigurationError):
        UdpListener("statsd", ("127.0.0.1", 0), key, StatsdParser().parse, FakeIngest(), Keys())  # type: ignore[arg-type]


async def test_a_parser_failure_drops_only_its_own_datagram() -> None:
    ingest = FakeIngest()
    listener = listener_with_a_bug(ingest)
    listener.received(b"a:1|c")  # queued together: one batch
    listener.received(b"boom")
    listener.received(b"b:1|c\nc:1|c")
    await run(listener)
    assert listener.handled == 3
    assert ingest.metrics.udp_dropped.labels("statsd", "error")._value.get() == 1
    assert ingest.published == [("ak_udp", 3)]
