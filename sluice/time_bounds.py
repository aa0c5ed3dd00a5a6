"""How far from the time it is taken an envelope's times may lie: one rule for the gateway,
which refuses what is outside, and the worker, which drops and counts it.

Every time of an envelope (its timestamp, a timer's start and stop, a span's start and end) is a
positive number of ns since the epoch, at most ``gateway.max_future_seconds`` ahead of when the
gateway takes it. The time a row or point is stored at (the timestamp of a log or event, a
span's start, a timer's stop, a counter's or gauge's timestamp) must also be within what is kept:
``clickhouse.ttl_days_raw`` for logs, events and spans (older rows would be dropped by the
table's TTL unannounced) and ``worker.max_lateness`` for metric points (the worker drops older
ones). A timer or span runs forwards, for at most ``gateway.max_duration_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from sluice.settings import GatewaySettings, Settings

NS = 1_000_000_000
DAY_NS = 86_400 * NS
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Window(NamedTuple):
    """The times accepted around one moment, in ns since the epoch (inclusive)."""

    raw_from: int  # a log's, event's or span's stored time
    metric_from: int  # a metric point's
    until: int  # every time
    max_duration: int  # a timer's stop - start, a span's end - start


UNBOUNDED = Window(INT64_MIN, INT64_MIN, INT64_MAX, INT64_MAX)


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """The limits, in ns; a past bound of 0 means none (times must still be positive)."""

    future_ns: int
    max_duration_ns: int
    raw_past_ns: int = 0
    metric_past_ns: int = 0

    @classmethod
    def of(cls, settings: Settings) -> TimeBounds:
        """The limits the settings set, retention included."""
        return cls(
            future_ns=int(settings.gateway.max_future_seconds * NS),
            max_duration_ns=int(settings.gateway.max_duration_seconds * NS),
            raw_past_ns=settings.clickhouse.ttl_days_raw * DAY_NS,
            metric_past_ns=int(settings.worker.max_lateness * NS),
        )

    @classmethod
    def of_gateway(cls, gateway: GatewaySettings) -> TimeBounds:
        """The gateway section's limits alone: no past bound but the epoch."""
        return cls(future_ns=int(gateway.max_future_seconds * NS), max_duration_ns=int(gateway.max_duration_seconds * NS))

    def in_worker(self) -> TimeBounds:
        """The worker's: it drops metric points older than ``worker.max_lateness`` apart, counted
        per key as late, so its decoder leaves them be."""
        return replace(self, metric_past_ns=0)

    def around(self, now_ns: int) -> Window:
        """What is accepted from an envelope taken at ``now_ns``."""
        return Window(
            now_ns - self.raw_past_ns if self.raw_past_ns else 1,
            now_ns - self.metric_past_ns if self.metric_past_ns else 1,
            now_ns + self.future_ns,
            self.max_duration_ns,
        )
