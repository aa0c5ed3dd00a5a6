"""kill -9 of the gateway while a client streams: the client resends only what was not
acknowledged, and everything it sent ends up on the topic."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator

from sluice.client import SluiceClient, counter_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import issue_token
from sluice.keys import AccessKeyConfig, JsonKeyStore
from sluice.settings import Settings
from sluice.tansu import free_port, wait_for_port
from sluice.v1.envelope_pb2 import Envelope
from tests.integration.gateway_helpers import envelopes_of, read_topic


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
            yield [counter_envelope("n", i * 100 + j, timestamp=1, source_id="s") for j in range(100)]

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
