"""kill -9 of the gateway (and of the worker with it) while a client streams: the client resends
only what was not acknowledged, everything it sent ends up on the topic, and ClickHouse holds
exactly what the topic holds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

from sluice.client import SluiceClient, counter_envelope, log_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import issue_token
from sluice.keys import AccessKeyConfig, JsonKeyStore
from sluice.settings import Settings
from sluice.tansu import free_port, wait_for_port
from sluice.v1.envelope_pb2 import Envelope
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import envelopes_of, read_topic

NS = 1_000_000_000
T0 = (time.time_ns() // NS // 60 - 3) * 60 * NS  # a whole minute three minutes ago: closed windows, within the TTLs


def start_gateway(settings: Settings) -> subprocess.Popen[bytes]:
    log = open(settings.data_dir / "gateway.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "sluice.cli.main", "gateway"],
                            env=dict(os.environ) | settings.to_env(), stdout=log, stderr=subprocess.STDOUT)
    assert wait_for_port("127.0.0.1", int(settings.gateway.listen.rsplit(":", 1)[1]), 30)
    return proc


async def test_gateway_killed_mid_stream(settings: Settings, unique: str) -> None:
    key = f"ak_{unique}"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    JsonKeyStore(settings.access_keys_path).put(AccessKeyConfig(access_key=key))
    settings.gateway.listen = f"127.0.0.1:{free_port()}"
    settings.gateway.metrics_listen = ""
    gateway = start_gateway(settings)
    acked = 0
    settled = asyncio.Event()
    killed = asyncio.Event()

    def on_ack(n: int) -> None:
        nonlocal acked
        acked += n
        if acked >= 1000:
            settled.set()

    async def source() -> AsyncIterator[list[Envelope]]:
        for i in range(40):
            if i == 20:
                await killed.wait()  # the second half goes to a gateway that was killed and restarted
            yield [counter_envelope("n", i * 100 + j, timestamp=T0, source_id="s") for j in range(100)]

    retry = RetryPolicy(max_attempts=None, max_elapsed=60, initial_backoff=0.1, max_backoff=1.0)
    try:
        async with SluiceClient(settings.gateway.listen, key, issue_token(settings.auth, key, 60), retry=retry) as c:
            sending = asyncio.ensure_future(
                c.send_stream(source(), max_stream_envelopes=500, on_ack=on_ack)
            )
            await asyncio.wait_for(settled.wait(), 30)
            gateway.send_signal(signal.SIGKILL)
            gateway.wait()
            gateway = start_gateway(settings)
            killed.set()
            assert await asyncio.wait_for(sending, 60) >= 4000
    finally:
        gateway.kill()
        gateway.wait()
    deltas = Counter(e.counter.delta for e in envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic)))
    assert set(deltas) == set(range(4000))  # nothing lost
    doubled = sum(n - 1 for n in deltas.values())
    assert doubled <= 500  # at most the one call the kill cut (its acknowledgement never came)
    assert acked == 4000


def item(k: int) -> Envelope:
    """Envelope ``k`` of the stream: logs (payload ``p<k>``) and counters (delta ``k``) alternate."""
    at = T0 + k * 1_000_000
    return log_envelope(f"p{k}", timestamp=at, source_id="s") if k % 2 == 0 else counter_envelope(
        "n", k, timestamp=at, source_id="s"
    )


async def test_gateway_and_worker_killed_together_mid_stream(
    settings: Settings, worker_process: WorkerProcess, unique: str
) -> None:
    """Both processes get SIGKILL at the same moment, mid-stream, with the worker mid-batch; both
    restart and the client finishes. The client resends (whole) the call the kill cut, so the topic
    may hold that one call twice (at-least-once: a dead gateway cannot say what it stored); the
    worker stores every record of the topic exactly once, so ClickHouse holds exactly the
    topic's envelopes: every acknowledged one, and at most those ``max_stream_envelopes`` twice."""
    key = f"ak_{unique}"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    JsonKeyStore(settings.access_keys_path).put(AccessKeyConfig(access_key=key))
    settings.gateway.listen = f"127.0.0.1:{free_port()}"
    settings.gateway.metrics_listen = ""
    settings.worker.batch_records = 4  # many small commits: the kill lands between and inside them
    settings.gateway.stream_batch_envelopes = 100  # the cut call's first batches reach Kafka before the kill
    gateway = start_gateway(settings)
    worker_process.start()
    total, per_call = 4000, 500
    acked = 0
    acks = asyncio.Condition()
    worker_busy = asyncio.Event()
    deep = asyncio.Event()  # the fourth call has sent three batches
    killed = asyncio.Event()

    async def acknowledged(n: int) -> None:
        async with acks:
            await acks.wait_for(lambda: acked >= n)

    def on_ack(n: int) -> None:
        nonlocal acked
        acked += n

        async def tell() -> None:
            async with acks:
                acks.notify_all()

        asyncio.ensure_future(tell())

    async def source() -> AsyncIterator[list[Envelope]]:
        for i in range(total // 100):
            if i == 10:
                await worker_busy.wait()
            if i == 18:
                deep.set()
            if i == 20:
                await killed.wait()  # the second half goes to the restarted processes
            elif i >= 10:
                await asyncio.sleep(0.1)  # paced: the kill lands while a call is in flight
            yield [item(i * 100 + j) for j in range(100)]

    retry = RetryPolicy(max_attempts=None, max_elapsed=60, initial_backoff=0.1, max_backoff=1.0)
    started = time.monotonic()
    try:
        async with SluiceClient(settings.gateway.listen, key, issue_token(settings.auth, key, 60), retry=retry) as c:
            sending = asyncio.ensure_future(c.send_stream(source(), max_stream_envelopes=per_call, on_ack=on_ack))
            await asyncio.wait_for(acknowledged(1000), 30)
            deadline = time.monotonic() + 30
            while (await asyncio.to_thread(worker_process.status))["counters"]["records"] < 1:
                assert time.monotonic() < deadline, "the worker processed nothing"
                await asyncio.sleep(0.02)
            worker_busy.set()
            await asyncio.wait_for(acknowledged(1500), 30)
            await asyncio.wait_for(deep.wait(), 30)
            assert worker_process.proc is not None
            gateway.send_signal(signal.SIGKILL)
            worker_process.proc.send_signal(signal.SIGKILL)
            gateway.wait()
            worker_process.proc.wait()
            acked_at_kill = acked
            assert acked_at_kill < 2000, "the first half was acknowledged before the kill"
            gateway = start_gateway(settings)
            killed.set()
            worker_process.start()
            assert await asyncio.wait_for(sending, 60) >= total
    finally:
        gateway.kill()
        gateway.wait()
    assert acked == total
    topic = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    logs = Counter(e.log.payload.decode() for e in topic if e.WhichOneof("message") == "log")
    deltas = Counter(e.counter.delta for e in topic if e.WhichOneof("message") == "counter")
    assert set(logs) == {f"p{k}" for k in range(0, total, 2)}  # nothing lost
    assert set(deltas) == set(range(1, total, 2))
    doubled = sum(n - 1 for n in logs.values()) + sum(n - 1 for n in deltas.values())
    assert doubled <= per_call  # at most the one call the kill cut (its acknowledgement never came)

    await worker_process.caught_up(60)
    stored = await worker_process.query(
        f"SELECT payload, count() FROM sluice.logs FINAL WHERE access_key = '{key}' GROUP BY payload"
    )
    assert Counter({payload: n for payload, n in stored}) == logs  # the topic's logs, each once
    # No FINAL, no dedup at query time: a window partial stored twice would show here.
    points = await worker_process.query(
        f"SELECT sum(count), sum(sum) FROM sluice.metrics_1s WHERE access_key = '{key}' AND name = 'n'"
    )
    assert points == [[deltas.total(), float(sum(d * n for d, n in deltas.items()))]]
    assert worker_process.stop() == 0
    print(f"\nkilled at {acked_at_kill} acknowledged; {doubled} envelope(s) doubled on the topic; "
          f"{time.monotonic() - started:.1f}s")
