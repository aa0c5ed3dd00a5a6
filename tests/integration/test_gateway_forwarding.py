"""Envelopes that need no change are published as the client encoded them, byte for byte, on
their shard and encrypted at rest when the key says so; the others are stamped and re-encoded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
from pydantic import SecretStr

from sluice.crypto import Keyring, generate_master_key
from sluice.ingress import Gateway
from sluice.ingress.frames import envelope_bytes, prefix
from sluice.settings import Settings
from sluice.shards import shard_for
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from sluice.v1.ingress_pb2 import SendResponse
from tests.integration.gateway_helpers import add_key, metadata_for, read_topic


def as_sent(i: int, source: str) -> bytes:
    """A counter as a client might encode it: valid, with its timestamp after its other fields."""
    env = Envelope(source_id=source, tags={"i": str(i)})
    env.counter.name, env.counter.delta = "requests", i + 1
    return env.SerializeToString() + Envelope(timestamp=time.time_ns() - i).SerializeToString()


async def test_unchanged_envelopes_are_forwarded_byte_for_byte_sharded_and_encrypted(
    settings: Settings, unique: str
) -> None:
    settings.encryption.keys = {"k1": SecretStr(generate_master_key())}
    sources = [f"host-{i}" for i in range(6)]
    sent = [as_sent(i, sources[i % 6]) for i in range(40)]
    assert Envelope.FromString(sent[0]).SerializeToString() != sent[0]
    unstamped = Envelope(timestamp=time.time_ns())  # no source: stamped with the key, so re-encoded
    unstamped.log.payload = b"stamp me"
    requests = [b"".join(prefix(len(e)) + e for e in sent[i : i + 10]) for i in range(0, 40, 10)]
    requests.append(EnvelopeBatch(batch=[unstamped]).SerializeToString())

    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}", shards=3, encrypt=True)

        async def stream() -> AsyncIterator[bytes]:
            for request in requests:
                yield request

        async with grpc.aio.insecure_channel(gateway.address) as channel:
            call = channel.stream_unary(
                "/sluice.v1.Ingress/BatchSender",
                request_serializer=lambda b: b, response_deserializer=SendResponse.FromString,
            )
            response = await call(stream(), metadata=metadata_for(settings, key))
    assert response.accepted == 41

    keyring = Keyring(settings.encryption)
    stored: dict[bytes, list[bytes]] = {}
    for record in await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic):
        assert dict(record.headers)["key-id"] == b"k1"
        assert b"requests" not in record.value
        stored.setdefault(record.key, []).extend(envelope_bytes(keyring.decrypt(key, "k1", record.value)))
    expected: dict[bytes, list[bytes]] = {}
    for data in sent:
        shard = shard_for(Envelope.FromString(data).source_id, 3)
        expected.setdefault(f"{key}:{shard}".encode(), []).append(data)
    unstamped.source_id = key
    expected.setdefault(f"{key}:{shard_for(key, 3)}".encode(), []).append(unstamped.SerializeToString())
    assert stored == expected
