"""Random bytes through real gRPC: each call gets a status, the gateway keeps serving,
publishes nothing but what decodes to valid envelopes, and accounts for every envelope and call."""

from __future__ import annotations

import random
import time

import grpc
import pytest
from google.protobuf.message import DecodeError

from sluice.client import SluiceClient, log_envelope
from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import EnvelopeBatch
from sluice.v1.ingress_pb2 import SendResponse
from tests.integration.gateway_helpers import add_key, assert_accounted, envelopes_of, metadata_for, read_topic


async def test_random_requests_get_a_status_and_publish_nothing(settings: Settings, unique: str) -> None:
    rng = random.Random(7)
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}")
        statuses: dict[grpc.StatusCode, int] = {}
        sent = acknowledged = 0  # envelopes the gateway can read (authenticated, decodable), and stored
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            send = channel.unary_unary("/sluice.v1.Ingress/Send")  # bytes in, bytes out
            for i in range(300):
                body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
                metadata = metadata_for(settings, key) if i % 2 else (("authorization", "Bearer x"),)
                if i % 2:
                    try:
                        sent += len(EnvelopeBatch.FromString(body).batch)
                    except DecodeError:
                        pass
                try:
                    acknowledged += SendResponse.FromString(await send(body, metadata=metadata, timeout=10)).accepted
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                statuses[code] = statuses.get(code, 0) + 1
        assert set(statuses) <= {
            grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
        }, statuses
        assert statuses[grpc.StatusCode.UNAUTHENTICATED] == 150  # checked before the body is
        assert statuses[grpc.StatusCode.INVALID_ARGUMENT] >= 100
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/sluice.v1.Ingress/Send")(b"\x0a\xff", metadata=metadata_for(settings, key))
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "request: not a valid sluice.v1.EnvelopeBatch: "
            "Error parsing message with type 'sluice.v1.EnvelopeBatch': Wire format was corrupt",
        )
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60)) as client:
            assert await client.send([log_envelope("still serving", timestamp=time.time_ns())]) == 1
        assert gateway.metrics_port
        await assert_accounted(
            gateway.metrics_port, key, sent=sent + 1, acknowledged=acknowledged + 1,
            refused_calls={code.name: n + (code == grpc.StatusCode.INVALID_ARGUMENT)
                           for code, n in statuses.items() if code != grpc.StatusCode.OK},
        )
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    # Random bytes that happen to parse as a valid batch are valid input; everything else is absent.
    assert stored[-1].log.payload == b"still serving"
    assert len(stored) == acknowledged + 1
