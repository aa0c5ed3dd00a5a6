"""Envelope validation: the checks every envelope passes before it is published.

This is the gateway's hot path, with two ways through it. :meth:`EnvelopeValidator.forward`
checks a request's bytes as they came, in C at the wire level (``_scan.c``), without decoding
them: when every envelope is valid and none needs stamping, their bytes are forwarded as they
are. Anything else (an envelope to stamp, an invalid one, any wire-format doubt) goes through
:meth:`EnvelopeValidator.validate`, which takes decoded envelopes one by one, stamps them, serializes
each at most once and alone words the errors. Both agree on every batch the fast path accepts
(``tests/unit/ingress/test_scan.py``). The publisher frames the bytes into records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from sluice.ingress._scan import scan
from sluice.ingress.exceptions import InvalidEnvelope, quoted
from sluice.ingress.frames import Forwarded
from sluice.settings import GatewaySettings
from sluice.v1.envelope_pb2 import Envelope

KINDS = "log, counter, gauge, timer, event, span"


def _not_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


class EnvelopeValidator:
    """Checks envelopes against the gateway's limits, stamps what is missing, and serializes them."""

    def __init__(self, gateway: GatewaySettings, *, clock: Callable[[], int] = time.time_ns) -> None:
        self._max_envelope_bytes = gateway.max_envelope_bytes
        self._max_batch = gateway.max_batch_envelopes
        self._max_tags = gateway.max_tags
        self._max_key_bytes = gateway.max_tag_key_bytes
        self._max_value_bytes = gateway.max_tag_value_bytes
        self._max_future_ns = int(gateway.max_future_seconds * 1e9)
        # A tag's key and value are inside the serialized envelope: an envelope no larger than
        # this cannot hold an oversized one, and its tags need no checking one by one.
        self._tags_fit_bytes = min(self._max_key_bytes, self._max_value_bytes)
        self._clock = clock

    def check_batch_length(self, length: int, *, where: str = "batch") -> None:
        """Refuse a request batch of more than ``gateway.max_batch_envelopes`` envelopes."""
        if length > self._max_batch:
            raise InvalidEnvelope(
                f"{where}: {length} envelopes exceed the limit of {self._max_batch} per batch", reason="batch_too_large"
            )

    def forward(self, received: bytes) -> Forwarded | None:
        """The envelopes of the serialized ``EnvelopeBatch`` ``received`` as they came, when all of
        them are valid as they are and none needs stamping (the size limit applies to the bytes
        received); None otherwise, or when in any doubt: then decode the batch and :meth:`validate`
        its envelopes, which words the error."""
        scanned = scan(
            received, self._clock() + self._max_future_ns, self._max_envelope_bytes, self._max_batch,
            self._max_tags, self._max_key_bytes, self._max_value_bytes,
        )
        if scanned is None:
            return None
        count, nbytes, framed = scanned
        return Forwarded(received, count, nbytes, framed=framed)

    def validate(self, envelopes: Sequence[Envelope], access_key: str, *, first_index: int = 0) -> list[bytes]:
        """Validate ``envelopes`` in place and return each one serialized.

        Envelopes without a timestamp get the time of receipt, those without a source get
        ``access_key``. The first invalid envelope raises :class:`InvalidEnvelope` naming it as
        ``envelope[<first_index + position>]`` and the offending field.
        """
        now = self._clock()
        horizon = now + self._max_future_ns
        max_bytes = self._max_envelope_bytes
        encoded: list[bytes] = []
        append = encoded.append
        for index, env in enumerate(envelopes, first_index):
            timestamp = env.timestamp
            if timestamp == 0:
                env.timestamp = now
            elif timestamp < 0:
                raise InvalidEnvelope(f"envelope[{index}].timestamp: {timestamp} is negative", reason="timestamp")
            elif timestamp > horizon:
                raise InvalidEnvelope(
                    f"envelope[{index}].timestamp: {timestamp} is more than "
                    f"{self._max_future_ns / 1e9:g}s in the future", reason="timestamp"
                )
            if not env.source_id:
                env.source_id = access_key
            # Nothing below changes the envelope: serialize it now, its size bounds its tags'.
            data = env.SerializeToString()
            if env.tags:
                self._check_tags(env, index, len(data))
            kind = env.WhichOneof("message")
            if kind is None:
                raise InvalidEnvelope(f"envelope[{index}]: no message is set (expected one of {KINDS})", reason="no_message")
            if kind == "counter":
                if not env.counter.name:
                    raise InvalidEnvelope(f"envelope[{index}].counter.name: must not be empty", reason="counter")
            elif kind == "gauge":
                self._check_gauge(env, index)
            elif kind == "timer":
                self._check_timer(env, index)
            elif kind == "span":
                self._check_span(env, index)
            if len(data) > max_bytes:
                raise InvalidEnvelope(
                    f"envelope[{index}]: {len(data)} bytes exceed the limit of {max_bytes} bytes", reason="too_large"
                )
            append(data)
        return encoded

    def _check_tags(self, env: Envelope, index: int, encoded_bytes: int) -> None:
        tags = env.tags
        if len(tags) > self._max_tags:
            raise InvalidEnvelope(
                f"envelope[{index}].tags: {len(tags)} tags exceed the limit of {self._max_tags}", reason="tags"
            )
        if encoded_bytes <= self._tags_fit_bytes:
            return
        for key in tags:
            value = tags[key]
            if len(key) * 4 > self._max_key_bytes and len(key.encode()) > self._max_key_bytes:
                raise InvalidEnvelope(
                    f"envelope[{index}].tags[{quoted(key)}]: key is {len(key.encode())} bytes, "
                    f"the limit is {self._max_key_bytes}", reason="tags"
                )
            if len(value) * 4 > self._max_value_bytes and len(value.encode()) > self._max_value_bytes:
                raise InvalidEnvelope(
                    f"envelope[{index}].tags[{quoted(key)}]: value is {len(value.encode())} bytes, "
                    f"the limit is {self._max_value_bytes}", reason="tags"
                )

    @staticmethod
    def _check_gauge(env: Envelope, index: int) -> None:
        metrics = env.gauge.metrics
        if not metrics:
            raise InvalidEnvelope(f"envelope[{index}].gauge.metrics: must not be empty", reason="gauge")
        for name in metrics:  # not .items(): a slow Python-level view on protobuf maps
            metric = metrics[name]
            if not name:
                raise InvalidEnvelope(f"envelope[{index}].gauge.metrics['']: name must not be empty", reason="gauge")
            value = metric.value
            if not math.isfinite(value):
                raise InvalidEnvelope(
                    f"envelope[{index}].gauge.metrics[{quoted(name)}].value: "
                    f"{_not_finite(value)} is not allowed", reason="gauge"
                )

    @staticmethod
    def _check_timer(env: Envelope, index: int) -> None:
        timer = env.timer
        if not timer.name:
            raise InvalidEnvelope(f"envelope[{index}].timer.name: must not be empty", reason="timer")
        if timer.stop < timer.start:
            raise InvalidEnvelope(
                f"envelope[{index}].timer.stop: {timer.stop} is before start {timer.start}", reason="timer"
            )

    @staticmethod
    def _check_span(env: Envelope, index: int) -> None:
        span = env.span
        where = f"envelope[{index}].span"
        if len(span.trace_id) != 16 or not any(span.trace_id):
            raise InvalidEnvelope(f"{where}.trace_id: must be 16 bytes, not all zero", reason="span")
        if len(span.span_id) != 8 or not any(span.span_id):
            raise InvalidEnvelope(f"{where}.span_id: must be 8 bytes, not all zero", reason="span")
        if len(span.parent_span_id) not in (0, 8):
            raise InvalidEnvelope(f"{where}.parent_span_id: must be 8 bytes or empty", reason="span")
        if not span.name:
            raise InvalidEnvelope(f"{where}.name: must not be empty", reason="span")
        if span.end < span.start:
            raise InvalidEnvelope(f"{where}.end: {span.end} is before start {span.start}", reason="span")
