"""Helpers that build envelopes. Every helper takes the common fields as keyword arguments:
``timestamp`` (ns since the epoch; 0 = stamped by the gateway), ``source_id`` (defaults to the
access key on the gateway), ``instance_id`` and ``tags``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from typing_extensions import Unpack

from sluice.v1.envelope_pb2 import Counter, Envelope, Event, Gauge, GaugeValue, Log, Timer


class EnvelopeFields(TypedDict, total=False):
    """The fields every envelope has."""

    timestamp: int
    source_id: str
    instance_id: str
    tags: Mapping[str, str]


def log_envelope(text: str | bytes, *, error: bool = False, **fields: Unpack[EnvelopeFields]) -> Envelope:
    """A log line; ``error`` marks it as written to stderr."""
    payload = text.encode() if isinstance(text, str) else text
    return Envelope(log=Log(payload=payload, type=Log.ERR if error else Log.OUT), **fields)


def counter_envelope(name: str, delta: int, total: int = 0, **fields: Unpack[EnvelopeFields]) -> Envelope:
    """A counter increment by ``delta``; ``total`` is the running total as the source knows it."""
    return Envelope(counter=Counter(name=name, delta=delta, total=total), **fields)


def gauge_envelope(
    metrics: Mapping[str, float | tuple[float, str]], **fields: Unpack[EnvelopeFields]
) -> Envelope:
    """Gauge readings ``{name: value}`` or ``{name: (value, unit)}``."""
    values = {
        name: GaugeValue(value=m[0], unit=m[1]) if isinstance(m, tuple) else GaugeValue(value=m)
        for name, m in metrics.items()
    }
    return Envelope(gauge=Gauge(metrics=values), **fields)


def timer_envelope(name: str, start: int, stop: int, **fields: Unpack[EnvelopeFields]) -> Envelope:
    """A duration from ``start`` to ``stop`` (ns since the epoch)."""
    return Envelope(timer=Timer(name=name, start=start, stop=stop), **fields)


def event_envelope(title: str, body: str = "", **fields: Unpack[EnvelopeFields]) -> Envelope:
    """A discrete event."""
    return Envelope(event=Event(title=title, body=body), **fields)
