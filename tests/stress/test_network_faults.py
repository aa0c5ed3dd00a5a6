"""Network faults between everything and the broker (a fault proxy the broker advertises, so the
gateway and the worker both go through it): latency, a stall, a full partition. Through each:
every acknowledged envelope stored exactly once, clients told UNAVAILABLE rather than hung, and
recovery without restarting anything."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from sluice.client import ClientError, SluiceClient, counter_envelope, log_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from sluice.tansu import Tansu
from tests.fixtures.proxy import FaultProxy
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key, assert_accounted, envelopes_of, read_topic

NS = 1_000_000_000
T0 = (time.time_ns() // NS - 120) * NS


def batch(n: int) -> list:  # type: ignore[type-arg]
    return [log_envelope(f"b{n} line {i}", timestamp=T0 + n) for i in range(5)] + [
        counter_envelope("faults", 1, timestamp=T0 + n) for _ in range(5)
    ]


@pytest.mark.parametrize("fault", ["latency", "stall", "partition"])
async def test_faults_between_everything_and_the_broker(
    settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str, fault: str
) -> None:
    _, proxy = proxied_broker
    settings.kafka.bootstrap = f"127.0.0.1:{proxy.port}"
    settings.kafka.publish_timeout = 2.0
    settings.gateway.block_timeout = 1.0
    worker = WorkerProcess(settings)
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}")
        worker.start()
        acknowledged = 0
        unavailable = 0
        retry = RetryPolicy.never()
        async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60), retry=retry,
                                timeout=10) as client:
            acknowledged += await client.send(batch(0))
            if fault == "latency":
                proxy.latency = 0.2
            else:
                proxy.set_mode(fault)  # type: ignore[arg-type]
            started = time.monotonic()
            for n in range(1, 4):
                try:
                    acknowledged += await client.send(batch(n))
                except ClientError as exc:  # told, not hung
                    assert exc.code == grpc.StatusCode.UNAVAILABLE and exc.retriable
                    unavailable += 1
            assert time.monotonic() - started < 20
            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - started)))  # the fault lasts 3 s or more
            proxy.latency = 0.0
            proxy.set_mode("pass")
            deadline = time.monotonic() + 60
            calls = 4
            while True:  # retried by hand, so that every attempt is counted
                calls += 1
                try:
                    acknowledged += await client.send(batch(9))
                    break
                except ClientError as exc:
                    assert exc.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, exc
                    unavailable += 1
                    await asyncio.sleep(0.2)
        assert gateway.metrics_port
        # Every call sent 10 envelopes, each read by the gateway; those of calls answered
        # UNAVAILABLE may still have reached Kafka after the answer (``unsure``).
        ledger = await assert_accounted(
            gateway.metrics_port, key, sent=10 * calls, acknowledged=acknowledged,
            refused_calls={"UNAVAILABLE": unavailable}, unsure=10 * unavailable,
        )
        await worker.caught_up(90)
        logs, points = (await worker.query(
            f"SELECT (SELECT count() FROM sluice.logs FINAL WHERE access_key = '{key}'), "
            f"(SELECT sum(count) FROM sluice.metrics_1s WHERE access_key = '{key}')"
        ))[0]
        assert worker.proc is not None and worker.proc.poll() is None  # never restarted
        assert worker.stop() == 0
    on_topic = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    print(f"\n{fault}: acknowledged {acknowledged}, UNAVAILABLE calls {unavailable}, on the topic {len(on_topic)}; "
          f"gateway: {ledger}")
    # A call answered UNAVAILABLE may still have reached Kafka (the acknowledgement did not come
    # back): the topic holds every acknowledged envelope and perhaps those; the worker stored
    # exactly what the topic holds, once.
    assert acknowledged <= len(on_topic) <= acknowledged + 10 * unavailable
    # The topic holds what Kafka acknowledged to the gateway, and perhaps some of what it
    # reported as failed (a timed-out request the broker had written: the stall case).
    assert ledger.acknowledged <= len(on_topic) <= ledger.acknowledged + ledger.rejected.get("UNAVAILABLE", 0)
    assert (logs, points) == (len(on_topic) // 2, len(on_topic) // 2)
    if fault != "latency":
        assert unavailable > 0
