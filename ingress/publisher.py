"""Publishing validated envelopes to the raw topic, one ``EnvelopeBatch`` per Kafka record.

A record's value is the concatenation of length-delimited envelopes, which is exactly the
protobuf encoding of an ``EnvelopeBatch`` (see :mod:`.frames`): envelopes are encoded at most once
(by the validator, or by the client when they needed no change) and never re-encoded. A call
:meth:`~Publisher.enqueue`\ s its chunk; with the ``block`` (and ``spool``) policy,
:meth:`~Publisher.wait` returns only after Kafka acknowledged every record of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from sluice.crypto import Keyring
from sluice.exceptions import ConfigurationError
from sluice.ingress.alerts import RateLimitedLog
from sluice.ingress.buffer import Chunk, Diode
from sluice.ingress.exceptions import PublishFailed
from sluice.ingress.frames import frame_records as frame_records  # re-exported: the publisher frames records
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.quotas import QuotaExceeded
from sluice.shards import access_key_of
from sluice.ingress.spool import Spool
from sluice.ingress.spooler import Spooler
from sluice.kafka import KafkaUnavailable
from sluice.records import raw_headers
from sluice.settings import GatewaySettings, KafkaSettings

log = logging.getLogger(__name__)

# Room for the record's key, headers and framing on top of its value.
RECORD_OVERHEAD = 64 * 1024

class Publisher:
    """The raw topic's producers (acks=all, not idempotent: Tansu lacks InitProducerId), fed
    through a :class:`Diode`. Calls :meth:`enqueue` chunks and, unless the policy is lossy,
    wait for Kafka's acknowledgement with :meth:`wait`; one task hands chunks to Kafka in order.

    There are ``gateway.producers`` producers, each with its own connection, and a chunk goes to
    the one of its ``lane``. A producer has one produce request in flight per broker, so one
    connection carries records one request at a time and a call waits for the requests ahead of
    its own. A call keeps one lane, so its records stay in order within their partition.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        gateway: GatewaySettings,
        *,
        metrics: GatewayMetrics,
        keyring: Keyring,
        spool_dir: Path,
        client_id: str = "sluice-gateway",
    ) -> None:
        if not kafka.bootstrap:
            raise ConfigurationError(
                "kafka.bootstrap is empty: the publisher needs a broker",
                hint="set SLUICE_KAFKA_BOOTSTRAP to host:port",
            )
        self.topic = kafka.raw_topic
        self._bootstrap = kafka.bootstrap
        self._client_id = client_id
        self._linger_ms = kafka.linger_ms
        self._max_record_bytes = kafka.max_record_bytes
        self._timeout = kafka.publish_timeout
        self._metrics = metrics
        self._keyring = keyring
        self.diode = Diode(
            gateway.buffer_bytes, gateway.buffer_policy,
            block_timeout=gateway.block_timeout, on_drop=self._dropped,
            key_capacity=gateway.max_buffer_bytes_per_key,
        )
        self._alert = RateLimitedLog(log, gateway.alert_interval)
        self._in_flight = asyncio.Semaphore(gateway.max_in_flight_chunks)
        self._producers: list[AIOKafkaProducer] = []
        self._producer_count = gateway.producers
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.spooler: Spooler | None = None
        if gateway.buffer_policy == "spool":
            spool = Spool(spool_dir, max_bytes=gateway.spool_max_bytes, segment_bytes=gateway.spool_segment_bytes)
            self.spooler = Spooler(spool, metrics)

    async def start(self) -> None:
        """Connect to the broker; :class:`KafkaUnavailable` when it cannot be reached."""
        if self._producers:
            return
        max_request = self._max_record_bytes + RECORD_OVERHEAD
        producers = [
            AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                acks="all",
                enable_idempotence=False,
                linger_ms=self._linger_ms,
                max_request_size=max_request,
                max_batch_size=max_request,
                request_timeout_ms=int(self._timeout * 1000),
            )
            for _ in range(self._producer_count)
        ]
        try:
            for producer in producers:
                await producer.start()
        except KafkaError as exc:
            await asyncio.gather(*(producer.stop() for producer in producers), return_exceptions=True)
            raise KafkaUnavailable(
                f"cannot connect to Kafka at {self._bootstrap}: {exc!r}",
                hint="is the broker running and is SLUICE_KAFKA_BOOTSTRAP right?",
            ) from exc
        self._producers = producers
        self._metrics.kafka_up.set(1)
        self._task = asyncio.ensure_future(self._run(producers))
        if self.spooler is not None:
            self.spooler.start(self._send_and_wait, lambda: self.diode.used == 0)

    async def stop(self) -> None:
        """Hand Kafka what is buffered (for up to ``kafka.publish_timeout``), then disconnect."""
        producers, self._producers = self._producers, []
        if not producers:
            return
        try:
            async with asyncio.timeout(self._timeout):
                while self.diode.used:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            log.error("stopping with %d buffered bytes Kafka did not take", self.diode.used)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.spooler is not None:
            await asyncio.gather(*self._background, return_exceptions=True)
            await self.spooler.stop()
        for producer in producers:
            await producer.stop()

    # -- what calls use ----------------------------------------------------------------

    async def enqueue(
        self,
        access_key: str,
        encoded: Sequence[bytes],
        *,
        encrypt: bool = False,
        record_key: bytes | None = None,
        framed: bytes | None = None,
        entry_point: str = "",
        lane: int = 0,
    ) -> Chunk:
        """Frame encoded envelopes of one key into records (encrypted if asked) and queue them
        (see :class:`Diode`); ``record_key`` is the Kafka key, the access key by default.
        ``framed``, when given, is ``encoded`` already framed as one ``EnvelopeBatch``. From
        here on the chunk settles its envelopes in the metrics: acknowledged, dropped, spooled,
        or rejected when Kafka (or the spool) failed them. Chunks of one ``lane`` reach Kafka in
        the order they were enqueued."""
        if not self._producers:
            raise RuntimeError("Publisher.enqueue() called before start()")
        if framed is not None and len(framed) <= self._max_record_bytes:
            records = [framed]
        else:
            records = frame_records(encoded, self._max_record_bytes)
        kid = ""
        if encrypt:
            encrypted = [self._keyring.encrypt(access_key, r) for r in records]
            kid, records = encrypted[0][0], [blob for _, blob in encrypted]
        chunk = Chunk(
            record_key or access_key.encode(), records, len(encoded), kid, entry_point=entry_point, lane=lane
        )
        if self.spooler is None:
            try:
                await self.diode.put(chunk)
            except QuotaExceeded:
                self._metrics.quota_refused.labels(access_key, "buffer").inc()
                raise
        elif self.spooler.active or not await self.diode.try_put(chunk):
            await self.spooler.add(chunk)  # behind what is spooled already, or no room in memory
        self._metrics.buffer_bytes.set(self.diode.used)
        return chunk

    async def wait(self, chunk: Chunk) -> None:
        """Return once Kafka acknowledged ``chunk``; :class:`PublishFailed` if it did not in time."""
        if self.diode.lossy:
            return
        what = f"{len(chunk.records)} record(s) on {self.topic!r}"
        # A spooled chunk is answered when Kafka took it or the spool did, after Kafka failed it.
        timeout = self._timeout * (3 if self.spooler else 1)
        try:
            await asyncio.wait_for(asyncio.shield(chunk.done), timeout)
        except TimeoutError as exc:
            raise PublishFailed(f"Kafka did not acknowledge {what} within {timeout:g}s") from exc
        except KafkaError as exc:
            raise PublishFailed(f"Kafka did not acknowledge {what}: {exc!r}") from exc

    async def _send_and_wait(self, key: bytes, records: list[bytes], kid: str) -> None:
        """Send records and wait for their acknowledgement (the spool's replay)."""
        if not self._producers:
            raise RuntimeError("the publisher is stopped")
        producer = self._producers[0]
        async with asyncio.timeout(self._timeout):
            acks = [
                await producer.send(self.topic, record, key=key, headers=raw_headers(kid))
                for record in records
            ]
            await asyncio.gather(*acks)

    # -- the producer side -------------------------------------------------------------

    async def _run(self, producers: list[AIOKafkaProducer]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._in_flight.acquire()
            chunk = await self.diode.get()
            started = loop.time()
            producer = producers[chunk.lane % len(producers)]
            try:
                acks = [
                    await producer.send(
                        self.topic, record, key=chunk.key, headers=raw_headers(chunk.kid)
                    )
                    for record in chunk.records
                ]
            except KafkaError as exc:
                self._finish(chunk, exc, started)
                continue
            gathered = asyncio.gather(*acks)
            gathered.add_done_callback(functools.partial(self._acked, chunk, started))

    def _acked(self, chunk: Chunk, started: float, acks: asyncio.Future[Any]) -> None:
        self._finish(chunk, None if acks.cancelled() else acks.exception(), started)

    def _finish(self, chunk: Chunk, error: BaseException | None, started: float) -> None:
        metrics = self._metrics
        if error is None:
            metrics.kafka_up.set(1)
            metrics.publish_seconds.observe(asyncio.get_running_loop().time() - started)
            for record in chunk.records:
                metrics.record_bytes.observe(len(record))
            metrics.acknowledged.labels(access_key_of(chunk.key)).inc(chunk.envelopes)
            if not chunk.done.done():
                chunk.done.set_result(None)
        else:
            metrics.kafka_up.set(0)
            if self.diode.lossy:
                self._dropped(chunk, "kafka_error")
            elif self.spooler is not None:
                spooling = asyncio.ensure_future(self.spooler.add(chunk))
                self._background.add(spooling)
                spooling.add_done_callback(self._background.discard)
            else:
                metrics.reject_envelopes(
                    access_key_of(chunk.key), chunk.entry_point, grpc.StatusCode.UNAVAILABLE, chunk.envelopes
                )
                if not chunk.done.done():
                    chunk.done.set_exception(error)
                else:
                    chunk.done.exception()  # already answered (timed out): mark the error as seen
        self._in_flight.release()
        task = asyncio.ensure_future(self.diode.release(chunk))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: metrics.buffer_bytes.set(self.diode.used))

    def _dropped(self, chunk: Chunk, reason: str) -> None:
        key = access_key_of(chunk.key)
        self._metrics.dropped.labels(key, self.diode.policy, reason).inc(chunk.envelopes)
        self._alert.warning(
            "dropped %d envelope(s) of %r (policy %s, %s)", chunk.envelopes, key, self.diode.policy, reason
        )
