"""The throttler (DeepFlow's): per access key token buckets on logs and events, never metrics.

A key's ``limits.events_per_second`` refills its bucket, ``events_burst`` sizes it (0 = one
second's worth). Envelopes over the limit are dropped, or with ``over_limit = "sample"`` one
in ``sample_one_in`` is kept; both are counted per key.

Time is the Kafka record's timestamp (the gateway's publish time), not the wall clock and not
the envelopes' own timestamps:

- wall time would make decisions depend on how fast records are processed: a backlog read
  after an outage (or a replay) would be throttled far harder than the live traffic was;
- envelope timestamps are chosen by clients, which could spread them to refill at will;
- the record timestamp is stamped by a trusted process once and is the same on every replay,
  so the same records in the same order give the same decisions.

Buckets are per record key (``access_key`` or ``access_key:shard``), each getting ``1/shards``
of the key's limit: a record key lives on exactly one partition, so one worker owns each bucket
and no coordination is needed. Buckets live in memory: after a restart they start full, so
records replayed from before a crash may be decided differently than before; outputs stay
exactly-once because sinks dedupe by source offset, only the choice of which envelopes pass
the limit may differ for records that were not durable yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sluice.keys.models import AccessKeyConfig

NS = 1_000_000_000


@dataclass
class KeyStats:
    """What the throttler did to one access key's logs and events."""

    passed: int = 0
    dropped: int = 0
    sampled: int = 0  # over the limit but kept by sampling


@dataclass
class _Bucket:
    tokens: int  # in units of 1 / (NS * shards) envelope
    at_ns: int
    over: int = 0  # envelopes over the limit so far, for 1-in-N sampling
    stats: KeyStats = field(default_factory=KeyStats)


class Throttler:
    """Decides which of a record's envelopes pass; see the module docstring."""

    def __init__(self, configs: Callable[[str], AccessKeyConfig | None]) -> None:
        self._configs = configs
        self._buckets: dict[str, _Bucket] = {}
        self.stats: dict[str, KeyStats] = {}

    def admit(self, record_key: str, at_ns: int, count: int) -> list[bool]:
        """Which of ``count`` envelopes of a record stamped ``at_ns`` pass, in order."""
        access_key = record_key.split(":", 1)[0]
        config = self._configs(access_key)
        if config is None or config.limits.events_per_second <= 0 or count == 0:
            return [True] * count
        limits = config.limits
        # Exact integer arithmetic: one envelope costs NS * shards units, a nanosecond refills
        # events_per_second units, so each bucket gets 1/shards of the key's rate and burst.
        cost = NS * config.shards
        burst = (limits.events_burst or limits.events_per_second) * NS
        bucket = self._buckets.get(record_key)
        if bucket is None:
            stats = self.stats.setdefault(access_key, KeyStats())
            bucket = self._buckets[record_key] = _Bucket(burst, at_ns, stats=stats)
        if at_ns > bucket.at_ns:  # time never runs backwards for a bucket
            bucket.tokens += (at_ns - bucket.at_ns) * limits.events_per_second
            bucket.at_ns = at_ns
        bucket.tokens = min(bucket.tokens, burst)  # also when the limit was lowered
        mask = []
        for _ in range(count):
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                bucket.stats.passed += 1
                mask.append(True)
                continue
            bucket.over += 1
            keep = limits.over_limit == "sample" and bucket.over % limits.sample_one_in == 1 % limits.sample_one_in
            if keep:
                bucket.stats.sampled += 1
            else:
                bucket.stats.dropped += 1
            mask.append(keep)
        return mask

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per access key: passed, dropped, sampled."""
        return {k: dict(vars(s)) for k, s in sorted(self.stats.items())}
