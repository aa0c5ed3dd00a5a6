"""The async Python SDK of Sluice: build envelopes and send them to a gateway."""

from sluice.client.client import SluiceClient
from sluice.client.envelopes import (
    EnvelopeFields,
    counter_envelope,
    event_envelope,
    gauge_envelope,
    log_envelope,
    timer_envelope,
)
from sluice.client.exceptions import ClientError
from sluice.client.retry import RetryPolicy, Retrying

__all__ = [
    "ClientError",
    "EnvelopeFields",
    "RetryPolicy",
    "Retrying",
    "SluiceClient",
    "counter_envelope",
    "event_envelope",
    "gauge_envelope",
    "log_envelope",
    "timer_envelope",
]
