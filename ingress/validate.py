"""Envelope validation: the checks every envelope passes before it is published.

This is the gateway's hot path. Each envelope is serialized at most once here, and not at all when
the caller passes the bytes it received and no envelope needs a change: those bytes are then
checked a whole batch at a time (:meth:`EnvelopeValidator._unchanged`), with C-level passes
(``map``, ``attrgetter``) instead of a Python loop over every field, and forwarded as they came.
Any doubt sends the batch down the one-by-one path, which alone words the errors, so both agree
on every outcome. The publisher frames the bytes into records.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, repeat
from operator import attrgetter, contains, eq, methodcaller

from sluice.ingress.exceptions import InvalidEnvelope, quoted
from sluice.ingress.frames import Forwarded, envelope_bytes
from sluice.settings import GatewaySettings
from sluice.v1.envelope_pb2 import Envelope

KINDS = "log, counter, gauge, timer, event, span"

_TIMESTAMP = attrgetter("timestamp")
_SOURCE = attrgetter("source_id")
_KIND = methodcaller("WhichOneof", "message")
_COUNTER_NAME = attrgetter("counter.name")
_GAUGE_METRICS = attrgetter("gauge.metrics")
# A double that is NaN or infinite has all exponent bits set: little-endian, its last two bytes are
# [F0-FF] [7F or FF]. GaugeValue.value is field 2, wire type 1 (tag 0x11) and 8 bytes. Bytes with no
# match hold no non-finite gauge value; a match (perhaps inside some other field) means: look closer.
_MAYBE_NOT_FINITE = re.compile(rb"\x11[\x00-\xff]{6}[\xf0-\xff][\x7f\xff]", re.DOTALL)


def _not_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _of_kind(envs: list[Envelope], kinds: list[str | None], kind: str) -> Iterable[Envelope]:
    return compress(envs, map(eq, kinds, repeat(kind)))


def _all_pass(check: Callable[[Envelope, int], None], envs: Iterable[Envelope]) -> bool:
    """Whether ``check`` passes every one of ``envs`` (its error is worded later, in order)."""
    try:
        for env in envs:
            check(env, 0)
    except InvalidEnvelope:
        return False
    return True


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
        # A tag takes at least two bytes on the wire (tag and length of its map entry), so an
        # envelope this small cannot hold more than max_tags, nor an oversized tag.
        self._small_bytes = min(self._tags_fit_bytes, 2 * self._max_tags + 1)
        self._clock = clock

    def check_batch_length(self, length: int, *, where: str = "batch") -> None:
        """Refuse a request batch of more than ``gateway.max_batch_envelopes`` envelopes."""
        if length > self._max_batch:
            raise InvalidEnvelope(
                f"{where}: {length} envelopes exceed the limit of {self._max_batch} per batch", reason="batch_too_large"
            )

    def validate(
        self, envelopes: Sequence[Envelope], access_key: str, *, first_index: int = 0, received: bytes | None = None
    ) -> list[bytes]:
        """Validate ``envelopes`` in place and return each one serialized.

        Envelopes without a timestamp get the time of receipt, those without a source get
        ``access_key``. The first invalid envelope raises :class:`InvalidEnvelope` naming it as
        ``envelope[<first_index + position>]`` and the offending field.

        ``received`` is the ``EnvelopeBatch`` that ``envelopes`` were decoded from, as it came:
        when all of them are valid and none needs stamping, their bytes in it are returned as
        they are, as a :class:`~sluice.ingress.frames.Forwarded` list (the size limit then
        applies to those bytes).
        """
        now = self._clock()
        horizon = now + self._max_future_ns
        if received is not None and envelopes:
            as_received = envelope_bytes(received)
            sizes = list(map(len, as_received))
            if len(as_received) == len(envelopes) and self._unchanged(envelopes, sizes, received, horizon):
                return Forwarded(as_received, received, sizes)
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

    def _unchanged(self, envelopes: Sequence[Envelope], sizes: list[int], received: bytes, horizon: int) -> bool:
        """True when every envelope (of ``sizes`` bytes as received) is valid as it is, with
        nothing to stamp, judged in C-level passes over the whole batch; False when in doubt."""
        if max(sizes) > self._max_envelope_bytes:
            return False
        envs = list(envelopes)  # each pass over the repeated field would wrap every envelope again
        timestamps = list(map(_TIMESTAMP, envs))
        if min(timestamps) <= 0 or max(timestamps) > horizon or not all(map(_SOURCE, envs)):
            return False
        kinds = list(map(_KIND, envs))
        present = set(kinds)
        if None in present:
            return False
        if "counter" in present and not all(map(_COUNTER_NAME, _of_kind(envs, kinds, "counter"))):
            return False
        if "gauge" in present:
            metrics = list(map(_GAUGE_METRICS, _of_kind(envs, kinds, "gauge")))
            if not all(map(len, metrics)) or any(map(contains, metrics, repeat(""))):
                return False
            if _MAYBE_NOT_FINITE.search(received) and not _all_pass(self._check_gauge, _of_kind(envs, kinds, "gauge")):
                return False
        if "timer" in present and not _all_pass(self._check_timer, _of_kind(envs, kinds, "timer")):
            return False
        if "span" in present and not _all_pass(self._check_span, _of_kind(envs, kinds, "span")):
            return False
        if max(sizes) > self._small_bytes:
            try:
                for env, size in compress(zip(envs, sizes), map(self._small_bytes.__lt__, sizes)):
                    self._check_tags(env, 0, size)
            except InvalidEnvelope:
                return False
        return True

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
