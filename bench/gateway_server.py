"""A child process serving the real gateway (settings from SLUICE_* variables) with one access
key; prints ``{"port": N}`` once it serves. ``--bare`` serves the reference instead: a grpc.aio
server with the same three methods that parses the requests and publishes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import AsyncIterator

import grpc

from sluice.runtime import tune_process
from sluice.settings import Settings, load_settings
from sluice.v1 import ingress_pb2, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch


class BareIngress(ingress_pb2_grpc.IngressServicer):
    """The ceiling: requests are parsed (by grpc) and counted, nothing else."""

    async def Send(self, request: EnvelopeBatch, context: grpc.aio.ServicerContext) -> ingress_pb2.SendResponse:
        return ingress_pb2.SendResponse(accepted=len(request.batch))

    async def Sender(self, requests: AsyncIterator[Envelope], context: grpc.aio.ServicerContext) -> ingress_pb2.SendResponse:
        n = 0
        async for _ in requests:
            n += 1
        return ingress_pb2.SendResponse(accepted=n)

    async def BatchSender(self, requests: AsyncIterator[EnvelopeBatch], context: grpc.aio.ServicerContext) -> ingress_pb2.SendResponse:
        n = 0
        async for batch in requests:
            n += len(batch.batch)
        return ingress_pb2.SendResponse(accepted=n)


async def _serve(settings: Settings, bare: bool, access_key: str) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    if bare:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
        ingress_pb2_grpc.add_IngressServicer_to_server(BareIngress(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(json.dumps({"port": port}), flush=True)
        await stopping.wait()
        await server.stop(1)
        return
    from sluice.ingress import Gateway
    from sluice.keys import AccessKeyConfig

    async with Gateway(settings) as gateway:
        await gateway.keys.put(AccessKeyConfig(access_key=access_key))
        print(json.dumps({"port": gateway.port, "metrics_port": gateway.metrics_port}), flush=True)
        await stopping.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--access-key", default="ak_bench")
    args = parser.parse_args()
    settings = load_settings()
    tune_process(settings)  # as `sluice gateway` does; the reference gets it too
    asyncio.run(_serve(settings, args.bare, args.access_key))


if __name__ == "__main__":
    main()
