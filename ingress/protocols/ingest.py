"""The one admission path of every protocol: validate, limit, enqueue, wait for Kafka.

These are the steps of ``IngressServicer._ingest`` for a request that is already whole (an OTLP
export, an HTTP body, a UDP datagram), with the same validator, limiter, publisher and metrics.
Unlike a native call, an invalid envelope does not refuse the request: OTLP, Influx and statsd
clients expect the good items to be stored and the bad ones reported, so invalid envelopes are
counted and skipped, and :class:`Admitted` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from sluice.exceptions import SluiceError
from sluice.ingress.accounting import CallAccount, status_of
from sluice.ingress.buffer import Chunk
from sluice.ingress.exceptions import InvalidEnvelope
from sluice.ingress.limits import ByteRateLimiter
from sluice.ingress.metrics import GatewayMetrics
from sluice.ingress.publisher import Publisher
from sluice.ingress.quotas import KeyQuotas
from sluice.ingress.validate import EnvelopeValidator
from sluice.keys import AccessKeyConfig
from sluice.v1.envelope_pb2 import Envelope


@dataclass(slots=True)
class Admitted:
    """What became of a request's envelopes: stored, or rejected (by index) with the first error."""

    accepted: int = 0
    rejected: set[int] = field(default_factory=set)
    error: str = ""


class Ingest:
    """Admit whole requests of one access key; see the module docstring."""

    def __init__(
        self,
        validator: EnvelopeValidator,
        publisher: Publisher,
        limiter: ByteRateLimiter,
        metrics: GatewayMetrics,
        quotas: KeyQuotas,
        *,
        chunk_envelopes: int,
    ) -> None:
        if chunk_envelopes < 1:
            raise ValueError(f"chunk_envelopes must be >= 1, got {chunk_envelopes}")
        self._validator = validator
        self.publisher = publisher
        self._limiter = limiter
        self.metrics = metrics
        self._quotas = quotas
        self._chunk = chunk_envelopes

    def validate(self, config: AccessKeyConfig, envelopes: Sequence[Envelope]) -> tuple[list[bytes], Admitted]:
        """The valid envelopes serialized (stamped like native ones) and which ones were not valid."""
        key = config.access_key
        admitted = Admitted()
        try:
            return self._validator.validate(envelopes, key), admitted
        except InvalidEnvelope:
            pass  # find every invalid one; those already stamped stay as they are
        encoded: list[bytes] = []
        for index, env in enumerate(envelopes):
            try:
                encoded += self._validator.validate((env,), key, first_index=index)
            except InvalidEnvelope as exc:
                self.metrics.invalid.labels(exc.reason).inc()
                admitted.rejected.add(index)
                admitted.error = admitted.error or str(exc)
        return encoded, admitted

    async def publish(self, config: AccessKeyConfig, envelopes: Sequence[Envelope], entry_point: str) -> Admitted:
        """Store the valid ones of ``envelopes`` once Kafka acknowledged them.

        :class:`~sluice.ingress.exceptions.RateLimited` (nothing stored, nothing charged) when
        the key is over its byte rate, :class:`~sluice.ingress.quotas.QuotaExceeded` (nothing
        read) when it has ``max_calls_per_key`` calls open already (the request holds one of
        them until it is answered);
        :class:`~sluice.ingress.exceptions.PublishFailed` and the buffer's errors as for native calls.
        Every envelope is accounted for in the metrics (see :mod:`sluice.ingress.accounting`).
        """
        with self._quotas.open(config.access_key, streaming=False):
            return await self._publish(config, envelopes, entry_point)

    async def _publish(self, config: AccessKeyConfig, envelopes: Sequence[Envelope], entry_point: str) -> Admitted:
        key = config.access_key
        account = CallAccount(self.metrics, entry_point, key)
        account.read(len(envelopes))
        encoded, admitted = self.validate(config, envelopes)
        account.reject(len(admitted.rejected), grpc.StatusCode.INVALID_ARGUMENT)
        if not encoded:
            return admitted
        chunks: list[Chunk] = []
        nbytes = sum(map(len, encoded))
        charged = queued = 0  # bytes taken from the byte rate, and of the envelopes in chunks
        try:
            self._limiter.admit(config, nbytes)
            charged = nbytes
            self.metrics.received_bytes.labels(key, entry_point).inc(nbytes)
            for start in range(0, len(encoded), self._chunk):
                part = encoded[start : start + self._chunk]
                chunk = await self.publisher.enqueue(key, part, encrypt=config.encrypt, entry_point=entry_point)
                account.enqueued(chunk.envelopes)
                chunks.append(chunk)
                queued += sum(map(len, part))
        except BaseException as exc:
            account.fail(status_of(exc))
            self._limiter.refund(key, charged - queued, config.limits)  # what queued goes on
            raise
        stored = 0
        try:
            for chunk in chunks:
                await self.publisher.wait(chunk)
                stored += chunk.envelopes
        except SluiceError:  # Kafka failed the rest
            self._limiter.refund(key, sum(map(len, encoded[stored:])), config.limits)
            raise
        admitted.accepted = len(encoded)
        return admitted
