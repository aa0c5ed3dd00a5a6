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
from sluice.time_bounds import DAY_NS, NS, TimeBounds, Window
from sluice.v1.envelope_pb2 import Envelope

KINDS = "log, counter, gauge, timer, event, span"
RAW_KINDS = frozenset({"log", "event", "span"})  # stored as rows, kept for clickhouse.ttl_days_raw


def _not_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


class EnvelopeValidator:
    """Checks envelopes against the gateway's limits, stamps what is missing, and serializes them.

    Every time an envelope holds is within ``bounds`` (see :mod:`sluice.time_bounds`; by default
    the gateway section's, with no past bound but the epoch) around the time of receipt.
    """

    def __init__(
        self, gateway: GatewaySettings, *, bounds: TimeBounds | None = None, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._max_envelope_bytes = gateway.max_envelope_bytes
        self._max_batch = gateway.max_batch_envelopes
        self._max_tags = gateway.max_tags
        self._max_key_bytes = gateway.max_tag_key_bytes
        self._max_value_bytes = gateway.max_tag_value_bytes
        self._bounds = bounds or TimeBounds.of_gateway(gateway)
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
            received, self._bounds.around(self._clock()), self._max_envelope_bytes, self._max_batch,
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
        window = self._bounds.around(now)
        max_bytes = self._max_envelope_bytes
        encoded: list[bytes] = []
        append = encoded.append
        for index, env in enumerate(envelopes, first_index):
            kind = env.WhichOneof("message")
            timestamp = env.timestamp
            if timestamp == 0:
                env.timestamp = now
            elif timestamp < 0 or timestamp > window.until or timestamp < window.metric_from or (
                timestamp < window.raw_from and kind in RAW_KINDS
            ):
                self._check_time(timestamp, f"envelope[{index}].timestamp", window, kind, "timestamp")
            if not env.source_id:
                env.source_id = access_key
            # Nothing below changes the envelope: serialize it now, its size bounds its tags'.
            data = env.SerializeToString()
            if env.tags:
                self._check_tags(env, index, len(data))
            if kind is None:
                raise InvalidEnvelope(f"envelope[{index}]: no message is set (expected one of {KINDS})", reason="no_message")
            if kind == "counter":
                if not env.counter.name:
                    raise InvalidEnvelope(f"envelope[{index}].counter.name: must not be empty", reason="counter")
            elif kind == "gauge":
                self._check_gauge(env, index)
            elif kind == "timer":
                self._check_timer(env, index, window)
            elif kind == "span":
                self._check_span(env, index, window)
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

    def _check_time(self, value: int, where: str, window: Window, kind: str | None, reason: str) -> None:
        """Refuse a time outside ``window``; ``kind`` is what it is the stored time of (None: nothing),
        which decides its past bound."""
        if value <= 0:
            raise InvalidEnvelope(f"{where}: {value} is {'negative' if value else 'not set'}", reason=reason)
        if value > window.until:
            raise InvalidEnvelope(
                f"{where}: {value} is more than {self._bounds.future_ns / NS:g}s in the future", reason=reason
            )
        if kind in RAW_KINDS and value < window.raw_from:
            raise InvalidEnvelope(
                f"{where}: {value} is older than the retention of logs, events and spans "
                f"({self._bounds.raw_past_ns // DAY_NS} days, clickhouse.ttl_days_raw)", reason="retention"
            )
        if kind is not None and kind not in RAW_KINDS and value < window.metric_from:
            raise InvalidEnvelope(
                f"{where}: {value} is older than the {self._bounds.metric_past_ns / NS:g}s metric points are "
                "kept for (worker.max_lateness)", reason="retention"
            )

    def _check_interval(self, where: str, kind: str, start: tuple[str, int], end: tuple[str, int], window: Window) -> None:
        """Refuse a timer or span that runs backwards, has a time outside ``window`` or lasts longer
        than ``max_duration``. The stored time (a timer's stop, a span's start) has the past bound."""
        (start_name, start_ns), (end_name, end_ns) = start, end
        if end_ns < start_ns:
            raise InvalidEnvelope(f"{where}.{end_name}: {end_ns} is before {start_name} {start_ns}", reason=kind)
        self._check_time(start_ns, f"{where}.{start_name}", window, kind if kind == "span" else None, kind)
        self._check_time(end_ns, f"{where}.{end_name}", window, kind if kind == "timer" else None, kind)
        if end_ns - start_ns > self._bounds.max_duration_ns:
            raise InvalidEnvelope(
                f"{where}: lasts {(end_ns - start_ns) / NS:g}s, longer than "
                f"{self._bounds.max_duration_ns / NS:g}s (gateway.max_duration_seconds)", reason=kind
            )

    def _check_timer(self, env: Envelope, index: int, window: Window) -> None:
        timer = env.timer
        where = f"envelope[{index}].timer"
        if not timer.name:
            raise InvalidEnvelope(f"{where}.name: must not be empty", reason="timer")
        self._check_interval(where, "timer", ("start", timer.start), ("stop", timer.stop), window)

    def _check_span(self, env: Envelope, index: int, window: Window) -> None:
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
        self._check_interval(where, "span", ("start", span.start), ("end", span.end), window)
