"""``sluice send``: log lines from a file or stdin, or synthetic metrics, through ``BatchSender``."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Iterator

from sluice.client import ClientError, SluiceClient, counter_envelope, gauge_envelope, log_envelope
from sluice.client.tls import tls_credentials
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import Envelope


def log_lines(path: str | None) -> Iterator[Envelope]:
    """One log envelope per line of ``path`` (stdin when None); the newline is dropped."""
    stream = open(path, "rb") if path else sys.stdin.buffer
    try:
        for line in stream:
            yield log_envelope(line.rstrip(b"\r\n"))
    finally:
        if path:
            stream.close()


def synthetic_metrics(count: int, *, seed: int = 0) -> Iterator[Envelope]:
    """``count`` envelopes alternating a counter (+1 each) and a gauge reading, reproducibly."""
    rng = random.Random(seed)
    for i in range(count):
        if i % 2 == 0:
            yield counter_envelope("requests", 1, tags={"route": rng.choice(["/", "/api", "/login"])})
        else:
            yield gauge_envelope({"cpu": (round(rng.uniform(0, 100), 2), "%")})


def batched(envelopes: Iterator[Envelope], size: int) -> Iterator[list[Envelope]]:
    batch: list[Envelope] = []
    for env in envelopes:
        batch.append(env)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_send(settings: Settings, args: argparse.Namespace) -> int:
    """Send, then print how many envelopes the gateway acknowledged; 1 on failure."""
    if args.batch < 1:
        raise SystemExit("sluice send: --batch must be >= 1")
    envelopes = synthetic_metrics(args.metrics) if args.metrics is not None else log_lines(args.file)
    sent = 0

    def counted() -> Iterator[list[Envelope]]:
        nonlocal sent
        for batch in batched(envelopes, args.batch):
            for env in batch:
                if args.source_id:
                    env.source_id = args.source_id
            sent += len(batch)
            yield batch

    credentials = tls_credentials(args.ca_file, args.cert_file, args.key_file)

    async def go() -> int:
        target = args.target or settings.gateway.listen
        async with SluiceClient(target, args.access_key, args.token, credentials=credentials) as client:
            return await client.send_stream(counted())

    try:
        accepted = asyncio.run(go())
    except ClientError as exc:
        stored = "an unknown number" if exc.accepted is None else str(exc.accepted)
        print(f"sluice send: {exc}; {stored} of {sent} envelopes were acknowledged", file=sys.stderr)
        return 1
    print(f"acknowledged {accepted} of {sent} envelopes")
    return 0 if accepted == sent else 1
