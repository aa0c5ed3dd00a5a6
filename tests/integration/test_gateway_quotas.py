"""Per-key quotas through real gRPC against Tansu: one key holding many idle streams, all its
calls or all its buffer leaves another key's calls accepted at their usual latency; a quiet
stream is ended; an undecodable config request is refused precisely."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2 as metrics_pb,
    metrics_service_pb2_grpc as metrics_grpc,
)

from sluice.client import ClientError, SluiceClient, counter_envelope, log_envelope
from sluice.client.retry import RetryPolicy
from sluice.ingress import Gateway, issue_token
from sluice.keys import Limits
from sluice.settings import Settings
from sluice.tansu import Tansu
from sluice.v1 import config_pb2, config_pb2_grpc, ingress_pb2_grpc
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from tests.fixtures.proxy import FaultProxy
from tests.integration.gateway_helpers import (
    CallMetadata,
    add_key,
    assert_accounted,
    envelopes_of,
    metadata_for,
    read_topic,
    scrape,
)
from tests.integration.protocol_helpers import with_protocols
from tests.integration.test_gateway_limits import HeldStream

T = time.time_ns()  # recent: times older than the retention or the lateness are refused
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def numbered(key: str, n: int, start: int = 0) -> list[Envelope]:
    """Envelopes whose encoding does not depend on when they are sent."""
    return [counter_envelope("n", i, timestamp=T, source_id=key) for i in range(start, start + n)]


def quota_refusals(gateway: Gateway, key: str, quota: str) -> float:
    assert gateway.metrics_port
    samples = scrape(gateway.metrics_port)
    return samples.get(("sluice_gateway_quota_refused_calls_total", (("access_key", key), ("quota", quota))), 0)


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: str(v) for k, v in error.trailing_metadata() or ()}


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the gateway logged at WARNING or above: a refusal the client caused is not news."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("sluice")]


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def timed_sends(stub: ingress_pb2_grpc.IngressStub, metadata: CallMetadata, key: str, start: int) -> list[float]:
    """Latencies of 30 Sends of 5 envelopes each, one after another; each must be accepted whole."""
    latencies = []
    for i in range(30):
        t = time.monotonic()
        response = await stub.Send(EnvelopeBatch(batch=numbered(key, 5, start + 5 * i)), metadata=metadata, timeout=10)
        latencies.append(time.monotonic() - t)
        assert response.accepted == 5
    return latencies


async def test_a_thousand_idle_streams_of_one_key_leave_another_key_unaffected(
    settings: Settings, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #19 finding 5: with the default settings, 1,000 streams of one key that send once
    and go quiet no longer lock every other key out (max_concurrent_rpcs is 1,000 too)."""
    async with Gateway(settings) as gateway:
        flood = await add_key(gateway.keys, f"ak_flood_{unique}")
        calm = await add_key(gateway.keys, f"ak_calm_{unique}")
        quota = settings.gateway.max_streams_per_key
        assert (settings.gateway.max_concurrent_rpcs, quota) == (1000, 50)
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = ingress_pb2_grpc.IngressStub(channel)
            calm_metadata = metadata_for(settings, calm)
            baseline = await timed_sends(stub, calm_metadata, calm, 0)

            # Ten connections of 100 streams each (max_concurrent_streams per connection is 100).
            floods = [grpc.aio.insecure_channel(gateway.address, options=OWN_CONNECTION) for _ in range(10)]
            flood_metadata = metadata_for(settings, flood)
            held = [HeldStream(floods[i % 10], flood_metadata, numbered(flood, 1, i)) for i in range(1000)]
            calls = [asyncio.ensure_future(h.call) for h in held]
            deadline = time.monotonic() + 60
            while sum(c.done() for c in calls) < 1000 - quota:
                assert time.monotonic() < deadline, f"{sum(c.done() for c in calls)} streams answered"
                await asyncio.sleep(0.05)
            assert gateway.quotas.open_calls(flood) == (quota, quota)

            during = await timed_sends(stub, calm_metadata, calm, 1000)
            assert p99(during) < 5 * p99(baseline) + 0.05, (p99(during), p99(baseline))

            refused = [c.exception() for c in calls if c.done()]
            assert len(refused) == 1000 - quota
            for error in refused:
                assert isinstance(error, grpc.aio.AioRpcError)
                assert (error.code(), error.details()) == (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"access key '{flood}' has {quota} streams open, its quota (gateway.max_streams_per_key); "
                    "retry in 1s",
                )
                assert trailers(error) == {"x-accepted": "0", "retry-after": "1.000"}
            for h in held:
                h.release()
            answered = await asyncio.gather(*calls, return_exceptions=True)
            assert [a.accepted for a in answered if not isinstance(a, BaseException)] == [1] * quota
            for c in floods:
                await c.close()
        assert quota_refusals(gateway, flood, "streams") == 1000 - quota
        assert loud(caplog) == []
        assert gateway.quotas.open_calls(flood) == (0, 0)
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, calm, sent=300, acknowledged=300, rejected={})
        await assert_accounted(gateway.metrics_port, flood, sent=quota, acknowledged=quota, rejected={})
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert sorted(e.counter.delta for e in stored if e.source_id == calm) == list(range(150)) + list(range(1000, 1150))
    assert len([e for e in stored if e.source_id == flood]) == quota


async def test_calls_and_streams_per_key(settings: Settings, unique: str) -> None:
    """Watches count as streams; a key at max_streams_per_key may still call, at
    max_calls_per_key it may not; another key is not held back by either."""
    settings.gateway.max_calls_per_key = 2
    settings.gateway.max_streams_per_key = 2
    async with Gateway(settings) as gateway:
        busy = await add_key(gateway.keys, f"ak_busy_{unique}")
        other = await add_key(gateway.keys, f"ak_other_{unique}")
        metadata = metadata_for(settings, busy)
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            ingress = ingress_pb2_grpc.IngressStub(channel)
            config = config_pb2_grpc.AgentConfigStub(channel)
            watches = [config.WatchConfig(config_pb2.GetConfigRequest(), metadata=metadata) for _ in range(2)]
            for watch in watches:
                assert (await watch.read()).access_key == busy
            assert gateway.quotas.open_calls(busy) == (2, 2)

            stream = HeldStream(channel, metadata, numbered(busy, 1))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stream.call
            stream.release()
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"access key '{busy}' has 2 streams open, its quota (gateway.max_streams_per_key); retry in 1s",
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ingress.Send(EnvelopeBatch(batch=numbered(busy, 1)), metadata=metadata, timeout=10)
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"access key '{busy}' has 2 calls open, its quota (gateway.max_calls_per_key); retry in 1s",
            )
            assert trailers(info.value) == {"x-accepted": "0", "retry-after": "1.000"}
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await config.GetConfig(config_pb2.GetConfigRequest(), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert trailers(info.value) == {"retry-after": "1.000"}

            other_metadata = metadata_for(settings, other)
            held = HeldStream(channel, other_metadata, numbered(other, 2))
            await held.sent.wait()
            sent = await ingress.Send(EnvelopeBatch(batch=numbered(other, 1, 2)), metadata=other_metadata)
            assert sent.accepted == 1
            held.release()
            assert (await held.call).accepted == 2

            watches[0].cancel()
            deadline = time.monotonic() + 5
            while gateway.quotas.open_calls(busy) != (1, 1):
                assert time.monotonic() < deadline, gateway.quotas.open_calls(busy)
                await asyncio.sleep(0.01)
            assert (await ingress.Send(EnvelopeBatch(batch=numbered(busy, 1, 1)), metadata=metadata)).accepted == 1
            watches[1].cancel()
        refusals = {q: quota_refusals(gateway, busy, q) for q in ("calls", "streams", "buffer")}
        assert refusals == {"calls": 2, "streams": 1, "buffer": 0}
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, busy, sent=1, acknowledged=1, rejected={})
        await assert_accounted(gateway.metrics_port, other, sent=3, acknowledged=3, rejected={})


@pytest.mark.parametrize("policy", ["block", "drop-newest"])
async def test_a_key_over_its_buffer_share_is_refused_while_another_gets_in(
    settings: Settings, proxied_broker: tuple[Tansu, FaultProxy], unique: str, policy: str
) -> None:
    """Kafka stalls: a key holding its max_buffer_bytes_per_key is refused (after block_timeout
    under block, at once under a lossy policy, nothing dropped) while another key's call is
    buffered and, once Kafka is back, stored."""
    _, proxy = proxied_broker
    settings.kafka.bootstrap = f"127.0.0.1:{proxy.port}"
    settings.gateway.buffer_policy = policy  # type: ignore[assignment]
    settings.gateway.block_timeout = 1.0
    settings.gateway.max_buffer_bytes_per_key = 4096
    async with Gateway(settings) as gateway:
        full = await add_key(gateway.keys, f"ak_full_{unique}")
        other = await add_key(gateway.keys, f"ak_other_{unique}")

        def three(key: str) -> list[Envelope]:
            return [log_envelope(f"{i} ".encode() + b"x" * 1000, timestamp=T, source_id=key) for i in range(3)]

        proxy.set_mode("stall")
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = ingress_pb2_grpc.IngressStub(channel)

            def send(key: str, batch: list[Envelope]) -> asyncio.Future[object]:
                return asyncio.ensure_future(
                    stub.Send(EnvelopeBatch(batch=batch), metadata=metadata_for(settings, key), timeout=30)
                )

            first = send(full, three(full))
            while not gateway.publisher.diode.held(full):
                await asyncio.sleep(0.01)
            held = gateway.publisher.diode.held(full)
            assert 3000 < held <= 4096
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await send(full, three(full))
            waited = time.monotonic() - started
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"access key '{full}' holds {held} bytes in the gateway's buffer, at its quota of 4096 "
                "(gateway.max_buffer_bytes_per_key); retry in 1s",
            )
            assert trailers(info.value) == {"x-accepted": "0", "retry-after": "1.000"}
            assert 0.9 < waited < 3 if policy == "block" else waited < 0.5, waited
            second = send(other, three(other))
            while not gateway.publisher.diode.held(other):
                await asyncio.sleep(0.01)
            assert gateway.publisher.diode.held(full) == held
            proxy.set_mode("pass")
            assert [r.accepted for r in await asyncio.gather(first, second)] == [3, 3]  # type: ignore[attr-defined]
        assert quota_refusals(gateway, full, "buffer") == 1
        assert gateway.metrics_port
        await assert_accounted(gateway.metrics_port, full, sent=6, acknowledged=3, rejected={"RESOURCE_EXHAUSTED": 3})
        await assert_accounted(gateway.metrics_port, other, sent=3, acknowledged=3, rejected={})
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert sorted(stored, key=lambda e: e.source_id) == three(full) + three(other)


async def test_a_quiet_stream_is_ended_once_what_it_sent_is_stored(
    settings: Settings, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream silent for stream_idle_timeout ends DEADLINE_EXCEEDED, its envelopes stored and
    acknowledged in x-accepted; a stream the gateway holds to its byte rate longer is not quiet."""
    settings.gateway.stream_idle_timeout = 0.5
    async with Gateway(settings) as gateway:
        quiet = await add_key(gateway.keys, f"ak_quiet_{unique}")
        slow = await add_key(gateway.keys, f"ak_slow_{unique}", limits=Limits(bytes_per_second=1000, bytes_burst=1200))
        batches = [[log_envelope(f"{i} ".encode() + b"y" * 1000, timestamp=T, source_id="s")] for i in range(3)]

        async def requests() -> AsyncIterator[EnvelopeBatch]:
            for batch in batches:
                yield EnvelopeBatch(batch=batch)

        async with grpc.aio.insecure_channel(gateway.address) as channel:
            held = HeldStream(channel, metadata_for(settings, quiet), numbered(quiet, 3))
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await held.call
            elapsed = time.monotonic() - started
            held.release()
            assert (info.value.code(), info.value.details()) == (
                grpc.StatusCode.DEADLINE_EXCEEDED, "the stream sent nothing for 0.5s (gateway.stream_idle_timeout)"
            )
            assert trailers(info.value) == {"x-accepted": "3"}
            assert 0.5 <= elapsed < 3, elapsed

            started = time.monotonic()
            paced = ingress_pb2_grpc.IngressStub(channel).BatchSender(requests(), metadata=metadata_for(settings, slow))
            assert (await paced).accepted == 3
            assert time.monotonic() - started > 1.5  # about 1 s per batch after the first
        assert gateway.metrics_port
        samples = scrape(gateway.metrics_port)
        idle = {key: samples.get(("sluice_gateway_idle_streams_ended_total", (("access_key", key),)), 0)
                for key in (quiet, slow)}
        assert idle == {quiet: 1, slow: 0}
        assert loud(caplog) == []
        await assert_accounted(gateway.metrics_port, quiet, sent=3, acknowledged=3, rejected={},
                               refused_calls={"DEADLINE_EXCEEDED": 1})
    stored = envelopes_of(await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic))
    assert sorted(e.counter.delta for e in stored if e.source_id == quiet) == [0, 1, 2]
    assert [e for e in stored if e.source_id == "s"] == [b[0] for b in batches]


async def test_an_undecodable_config_request_is_invalid_argument(settings: Settings, unique: str) -> None:
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}")
        metadata = metadata_for(settings, key)
        garbage = b"\x0a\xff"  # field 1, length-delimited, length cut off
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            get = channel.unary_unary("/sluice.v1.AgentConfig/GetConfig")
            watch = channel.unary_stream("/sluice.v1.AgentConfig/WatchConfig")
            with pytest.raises(grpc.aio.AioRpcError) as got:
                await get(garbage, metadata=metadata, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as watched:
                await watch(garbage, metadata=metadata, timeout=10).read()
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await get(garbage, timeout=10)
        expected = (
            "request: not a valid sluice.v1.GetConfigRequest: Error parsing message with type "
            "'sluice.v1.GetConfigRequest': Wire format was corrupt"
        )
        assert (got.value.code(), got.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
        assert (watched.value.code(), watched.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED  # authenticated first
        assert gateway.metrics_port
        samples = scrape(gateway.metrics_port)
        assert samples[("sluice_gateway_invalid_requests_total", (("reason", "malformed"),))] == 2
        refused = {labels: v for (name, labels), v in samples.items()
                   if name == "sluice_gateway_rejected_calls_total" and v}
        assert refused == {
            (("code", "INVALID_ARGUMENT"), ("entry_point", "GetConfig")): 1,
            (("code", "INVALID_ARGUMENT"), ("entry_point", "WatchConfig")): 1,
            (("code", "UNAUTHENTICATED"), ("entry_point", "GetConfig")): 1,
        }
        assert gateway.quotas.open_calls(key) == (0, 0)


async def test_http_and_otlp_requests_hold_a_call_of_their_key(settings: Settings, unique: str) -> None:
    """Whole requests of the other protocols count against max_calls_per_key: HTTP 429 with
    Retry-After, OTLP/gRPC RESOURCE_EXHAUSTED with retry-after; another key's go through."""
    settings.gateway.max_calls_per_key = 1
    async with Gateway(with_protocols(settings, unique)) as gateway:
        busy = await add_key(gateway.keys, f"ak_busy_{unique}")
        other = await add_key(gateway.keys, f"ak_other_{unique}")
        assert gateway.protocols.http is not None
        url = f"http://127.0.0.1:{gateway.protocols.http.port}/api/v2/write"
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            held = HeldStream(channel, metadata_for(settings, busy), numbered(busy, 1))
            await held.sent.wait()
            async with aiohttp.ClientSession() as http:
                answers = []
                for key in (busy, other):
                    token = issue_token(settings.auth, key, 60)
                    async with http.post(url, data=b"up v=1", headers={"Authorization": f"Token {token}"}) as r:
                        answers.append((r.status, r.headers.get("Retry-After"), await r.text()))
            assert answers[0][:2] == (429, "1")
            assert f"access key '{busy}' has 1 calls open, its quota (gateway.max_calls_per_key)" in answers[0][2]
            assert answers[1][:2] == (204, None)
            export = metrics_grpc.MetricsServiceStub(channel).Export
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await export(metrics_pb.ExportMetricsServiceRequest(), metadata=metadata_for(settings, busy))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert trailers(info.value) == {"retry-after": "1.000"}
            await export(metrics_pb.ExportMetricsServiceRequest(), metadata=metadata_for(settings, other))
            held.release()
            assert (await held.call).accepted == 1
        assert quota_refusals(gateway, busy, "calls") == 2
        assert quota_refusals(gateway, other, "calls") == 0
