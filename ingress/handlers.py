"""gRPC method handlers of ``sluice.v1.Ingress`` and ``sluice.v1.AgentConfig`` that keep
undecodable requests.

The generated registration deserializes with ``FromString``; bytes that are not the message
then fail inside grpc, before any handler runs, as UNKNOWN "Unexpected DecodeError". Here a
request that does not decode becomes a :class:`Malformed` value instead, so the servicer can
authenticate the call first and then answer INVALID_ARGUMENT naming the problem. A batch is
kept as the bytes it came in (:class:`Received`) and decoded only when it must be: a batch of
envelopes that need no change is checked at the wire level and forwarded as it came.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from sluice.v1 import config_pb2, ingress_pb2
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch

SERVICE = "sluice.v1.Ingress"
CONFIG_SERVICE = "sluice.v1.AgentConfig"


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request message that did not decode."""

    message_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Received:
    """A request ``EnvelopeBatch`` as the bytes it came in."""

    data: bytes

    def decode(self) -> EnvelopeBatch | Malformed:
        return _decode_batch(self.data)  # type: ignore[return-value]


def tolerant(message: type[Message]) -> Callable[[bytes], Message | Malformed]:
    name = message.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | Malformed:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(name, str(exc) or "wire format is corrupt")

    return decode


_decode_batch = tolerant(EnvelopeBatch)


def add_ingress_to_server(servicer: Any, server: grpc.aio.Server) -> None:
    """Register ``servicer``'s Send, Sender and BatchSender with tolerant deserializers."""
    respond = ingress_pb2.SendResponse.SerializeToString
    handlers = {
        "Send": grpc.unary_unary_rpc_method_handler(
            servicer.Send, request_deserializer=Received, response_serializer=respond
        ),
        "Sender": grpc.stream_unary_rpc_method_handler(
            servicer.Sender, request_deserializer=tolerant(Envelope), response_serializer=respond
        ),
        "BatchSender": grpc.stream_unary_rpc_method_handler(
            servicer.BatchSender, request_deserializer=Received, response_serializer=respond
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def add_agent_config_to_server(servicer: Any, server: grpc.aio.Server) -> None:
    """Register ``servicer``'s GetConfig and WatchConfig with tolerant deserializers."""
    decode = tolerant(config_pb2.GetConfigRequest)
    respond = config_pb2.AgentConfigResponse.SerializeToString
    handlers = {
        "GetConfig": grpc.unary_unary_rpc_method_handler(
            servicer.GetConfig, request_deserializer=decode, response_serializer=respond
        ),
        "WatchConfig": grpc.unary_stream_rpc_method_handler(
            servicer.WatchConfig, request_deserializer=decode, response_serializer=respond
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(CONFIG_SERVICE, handlers),))
