"""``sluice send``: log lines from a file or stdin, or synthetic metrics, through ``BatchSender``;
with ``--follow``, the new lines of a growing file (see :mod:`sluice.cli.follow`)."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Iterator

import grpc

from sluice.client import ClientError, RetryPolicy, SluiceClient, counter_envelope, gauge_envelope, log_envelope
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


def retry_policy(args: argparse.Namespace) -> RetryPolicy:
    """``--retry-for`` seconds if given; else a follower retries for ever, a one-off send 1 minute."""
    if args.retry_for is not None:
        return RetryPolicy(max_attempts=None, max_elapsed=args.retry_for)
    if args.follow:
        return RetryPolicy(max_attempts=None, max_elapsed=None)
    return RetryPolicy(max_attempts=None, max_elapsed=60.0)


def run_send(settings: Settings, args: argparse.Namespace) -> int:
    """Send, then print how many envelopes the gateway acknowledged; 1 on failure."""
    if args.batch < 1:
        raise SystemExit("sluice send: --batch must be >= 1")
    if args.follow and (args.file is None or args.metrics is not None):
        raise SystemExit("sluice send: --follow needs a FILE (and no --metrics)")
    if args.state and not args.follow:
        raise SystemExit("sluice send: --state goes with --follow")
    target = args.target or settings.gateway.listen
    retry = retry_policy(args)
    credentials = tls_credentials(args.ca_file, args.cert_file, args.key_file)
    if args.follow:
        return _run_follow(target, retry, credentials, args)
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

    async def go() -> int:
        async with SluiceClient(target, args.access_key, args.token, retry=retry, credentials=credentials) as client:
            return await client.send_stream(counted())

    try:
        accepted = asyncio.run(go())
    except ClientError as exc:
        stored = "an unknown number" if exc.accepted is None else str(exc.accepted)
        print(f"sluice send: {exc}; {stored} of {sent} envelopes were acknowledged", file=sys.stderr)
        return 1
    print(f"acknowledged {accepted} of {sent} envelopes")
    return 0 if accepted == sent else 1


def _run_follow(
    target: str, retry: RetryPolicy, credentials: grpc.ChannelCredentials | None, args: argparse.Namespace
) -> int:
    from sluice.cli.follow import follow_until_signalled

    state = args.state or f"{args.file}.sluice-pos"

    async def go() -> tuple[int, int]:
        async with SluiceClient(target, args.access_key, args.token, retry=retry, credentials=credentials) as client:
            return await follow_until_signalled(
                client, args.file, state, batch=args.batch, source_id=args.source_id
            )

    try:
        read, accepted = asyncio.run(go())
    except ClientError as exc:
        print(f"sluice send: {exc}; the position acknowledged is saved in {state}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print(f"sluice send: stopped; the position acknowledged is saved in {state}", file=sys.stderr)
        return 130
    print(f"acknowledged {accepted} of {read} lines; position saved in {state}")
    return 0
