"""Record framing: encoded envelopes packed into EnvelopeBatch values under a size limit; which
producer publishes a chunk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sluice.crypto import Keyring
from sluice.ingress import publisher as publisher_module
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.publisher import Publisher, frame_records
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch


def envelope(i: int, payload_bytes: int) -> Envelope:
    env = Envelope(timestamp=i + 1, source_id=f"s{i}")
    env.log.payload = b"x" * payload_bytes
    return env


@pytest.mark.parametrize("payload_bytes", [0, 100, 126, 127, 128, 300, 20_000])
def test_records_decode_to_the_same_envelopes_in_order(payload_bytes: int) -> None:
    envelopes = [envelope(i, payload_bytes) for i in range(25)]
    encoded = [e.SerializeToString() for e in envelopes]
    records = frame_records(encoded, 4096)
    decoded = [env for record in records for env in EnvelopeBatch.FromString(record).batch]
    assert decoded == envelopes
    for record in records:
        batch = EnvelopeBatch.FromString(record)
        assert record == batch.SerializeToString()
        assert len(record) <= 4096 or len(batch.batch) == 1


def test_records_are_filled_up_to_the_limit() -> None:
    encoded = [envelope(i, 95).SerializeToString() for i in range(10)]
    framed = 2 + len(encoded[0])  # tag + one-byte length
    assert len(encoded[0]) < 128
    records = frame_records(encoded, 3 * framed)
    assert [len(EnvelopeBatch.FromString(r).batch) for r in records] == [3, 3, 3, 1]
    assert [len(r) for r in records] == [3 * framed] * 3 + [framed]


def test_nothing_to_frame() -> None:
    assert frame_records([], 1024) == []
    with pytest.raises(ValueError, match=r"^max_record_bytes must be >= 1, got 0$"):
        frame_records([b""], 0)


class FakeProducer:
    """Stands in for AIOKafkaProducer: every send is acknowledged at once, and recorded."""

    instances: list[FakeProducer] = []

    def __init__(self, **config: object) -> None:
        self.sent: list[bytes] = []
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, *, key: bytes, headers: object) -> asyncio.Future[None]:
        self.sent.append(value)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


async def test_each_lane_keeps_one_producer_and_its_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(publisher_module, "AIOKafkaProducer", FakeProducer)
    FakeProducer.instances = []
    settings = Settings(kafka={"bootstrap": "broker:9092"}, gateway={"producers": 2})
    publisher = Publisher(
        settings.kafka, settings.gateway, metrics=GatewayMetrics(), keyring=Keyring(settings.encryption),
        spool_dir=tmp_path,
    )
    await publisher.start()
    try:
        order = [(0, b"a1"), (1, b"b1"), (0, b"a2"), (2, b"c1"), (1, b"b2"), (0, b"a3")]
        chunks = [
            await publisher.enqueue("ak_test", [value], framed=value, lane=lane) for lane, value in order
        ]
        for chunk in chunks:
            await publisher.wait(chunk)
    finally:
        await publisher.stop()
    first, second = FakeProducer.instances
    assert first.sent == [b"a1", b"a2", b"c1", b"a3"]  # lanes 0 and 2 (2 % 2 producers)
    assert second.sent == [b"b1", b"b2"]
