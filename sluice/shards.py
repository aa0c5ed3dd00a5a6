"""Partitions per access key: a key with ``shards > 1`` is spread over several Kafka record keys.

Records of such a key are keyed ``<access_key>:<shard>``, the shard chosen by a stable hash of
the envelope's ``source_id``: one source always lands on one shard (so its order is kept),
while a hot key's sources spread over several partitions and workers. Partial aggregates of the
same window from several shards are merged by ClickHouse, never by the workers.
"""

from __future__ import annotations

import zlib


def shard_for(source_id: str, shards: int) -> int:
    """The shard of ``source_id`` among ``shards`` (0 when there is one)."""
    if shards <= 1:
        return 0
    return zlib.crc32(source_id.encode()) % shards


def record_key(access_key: str, shard: int, shards: int) -> bytes:
    """The Kafka record key of ``access_key``'s records of ``shard``."""
    return (access_key if shards <= 1 else f"{access_key}:{shard}").encode()


def access_key_of(record_key: bytes | None) -> str:
    """The access key a record key belongs to."""
    return (record_key or b"").decode("utf-8", "replace").split(":", 1)[0]
