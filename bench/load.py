"""The gRPC load generator: pre-serialized requests, so the client spends little CPU per envelope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc

from sluice.v1.ingress_pb2 import SendResponse

Metadata = tuple[tuple[str, str], ...]


def _identity(b: bytes) -> bytes:
    return b


@dataclass
class LoadResult:
    envelopes: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # per call, seconds
    errors: dict[str, int] = field(default_factory=dict)


def batch_bytes(encoded: Sequence[bytes]) -> bytes:
    """An EnvelopeBatch message of already serialized envelopes."""
    from sluice.ingress.publisher import frame_records

    return frame_records(encoded, 1 << 30)[0]


async def drive(target: str, metadata: Metadata, method: str, encoded: Sequence[bytes], *,
                batch: int = 500, per_call: int = 10, concurrency: int = 4, duration: float = 5.0,
                rate: float | None = None) -> LoadResult:
    """Call ``method`` (Send, Sender or BatchSender) from ``concurrency`` tasks for ``duration``
    seconds; each call carries ``batch`` envelopes (Send) or ``per_call`` messages (streams).
    ``rate`` (envelopes/s over all tasks) paces the calls; None = as fast as answered."""
    batches = [batch_bytes(encoded[i:i + batch]) for i in range(0, len(encoded) - batch + 1, batch)]
    result = LoadResult()
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        path = f"/sluice.v1.Ingress/{method}"
        if method == "Send":
            unary = channel.unary_unary(path, request_serializer=_identity, response_deserializer=SendResponse.FromString)
        else:
            stream = channel.stream_unary(path, request_serializer=_identity, response_deserializer=SendResponse.FromString)
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + duration
        per_task = rate / concurrency if rate else None

        async def worker(w: int) -> None:
            i = w
            sent_env = 0
            while loop.time() < end:
                if method == "Send":
                    request = batches[i % len(batches)]
                    call_env = batch
                elif method == "Sender":
                    msgs = encoded[(i * per_call) % (len(encoded) - per_call):][:per_call]
                    call_env = per_call
                else:
                    msgs = [batches[(i + k) % len(batches)] for k in range(per_call)]
                    call_env = batch * per_call
                if per_task:
                    due = start + sent_env / per_task
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                t = time.perf_counter()
                try:
                    if method == "Send":
                        response = await unary(request, metadata=metadata)
                    else:
                        async def requests(msgs: Sequence[bytes] = msgs) -> AsyncIterator[bytes]:
                            for m in msgs:
                                yield m
                        response = await stream(requests(), metadata=metadata)
                    result.latencies.append(time.perf_counter() - t)
                    result.envelopes += response.accepted
                except grpc.aio.AioRpcError as exc:
                    name = exc.code().name
                    result.errors[name] = result.errors.get(name, 0) + 1
                sent_env += call_env
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        result.seconds = loop.time() - start
    return result
