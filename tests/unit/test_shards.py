"""Record keys of sharded access keys."""

from __future__ import annotations

from collections import Counter

from sluice.shards import access_key_of, record_key, shard_for


def test_one_shard_keeps_the_plain_access_key() -> None:
    assert shard_for("any", 1) == 0
    assert record_key("tenant", 0, 1) == b"tenant"
    assert access_key_of(b"tenant") == "tenant"


def test_sources_spread_stably_over_the_shards() -> None:
    shards = [shard_for(f"host-{i}", 4) for i in range(1000)]
    assert shards == [shard_for(f"host-{i}", 4) for i in range(1000)]  # stable
    assert set(Counter(shards)) == {0, 1, 2, 3}
    assert min(Counter(shards).values()) > 200
    assert record_key("tenant", 3, 4) == b"tenant:3"
    assert access_key_of(b"tenant:3") == "tenant"
    assert access_key_of(None) == ""
