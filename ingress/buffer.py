"""The diode: a bounded buffer between the calls that receive envelopes and the Kafka producer.

Capacity is counted in bytes of framed records, from the moment a chunk is put until Kafka
answered for it. When it is full, the policy decides (Loggregator's diodes, with a blocking
mode added):

- ``block``: the call waits for room, up to ``block_timeout``, then fails with UNAVAILABLE
  (retriable): nothing is lost, memory stays bounded, the client backs off.
- ``drop-newest``: the incoming chunk is dropped.
- ``drop-oldest``: queued chunks not yet handed to Kafka are dropped, oldest first.
- ``spool``: like ``block``, but the publisher moves what Kafka cannot take to disk
  (see :mod:`sluice.ingress.spool`).

Every drop is reported to ``on_drop`` (counted and alerted by the caller).

Each access key also has a share, ``key_capacity`` bytes: a chunk of a key holding that much
already is never let in by dropping (or waiting out) the others'. Under ``block`` it waits for its
key's room up to ``block_timeout``, under the lossy policies it is refused at once; either way
with :class:`~sluice.ingress.quotas.QuotaExceeded` (RESOURCE_EXHAUSTED), nothing dropped. Under
``spool`` it goes to the spool, like a chunk the buffer has no room for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sluice.ingress.exceptions import BufferFull
from sluice.ingress.quotas import QuotaExceeded
from sluice.shards import access_key_of

Policy = Literal["block", "drop-oldest", "drop-newest", "spool"]
POLICIES: tuple[Policy, ...] = ("block", "drop-oldest", "drop-newest", "spool")
LOSSY: frozenset[str] = frozenset({"drop-oldest", "drop-newest"})


@dataclass(eq=False)
class Chunk:
    """Records of one access key, published together. ``done`` resolves once Kafka acknowledged
    them (or fails with the reason it did not); lossy policies let calls go without waiting."""

    key: bytes
    records: list[bytes]
    envelopes: int
    kid: str = ""  # the encryption key id when the records are encrypted
    entry_point: str = ""  # where its envelopes came in, for the metrics
    lane: int = 0  # which of the publisher's producers takes it (see Publisher)
    nbytes: int = 0
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def __post_init__(self) -> None:
        if not self.nbytes:
            self.nbytes = sum(len(r) for r in self.records) + len(self.key)


DropHandler = Callable[[Chunk, str], None]


class Diode:
    """A bounded FIFO of chunks with a full-buffer policy; one consumer (the publisher)."""

    def __init__(
        self,
        capacity_bytes: int,
        policy: Policy,
        *,
        block_timeout: float,
        on_drop: DropHandler,
        key_capacity: int | None = None,
    ) -> None:
        if capacity_bytes < 1:
            raise ValueError(f"capacity_bytes must be >= 1, got {capacity_bytes}")
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r}; expected one of {', '.join(POLICIES)}")
        if block_timeout <= 0:
            raise ValueError(f"block_timeout must be > 0, got {block_timeout}")
        self.capacity = capacity_bytes
        self.key_capacity = key_capacity
        self.policy = policy
        self.block_timeout = block_timeout
        self._on_drop = on_drop
        self._queue: deque[Chunk] = deque()
        self.used = 0  # bytes queued or in flight
        self._held: dict[str, int] = {}  # of those, by access key
        self._changed = asyncio.Condition()

    @property
    def lossy(self) -> bool:
        return self.policy in LOSSY

    @property
    def depth(self) -> int:
        """Chunks waiting to be handed to Kafka."""
        return len(self._queue)

    def _fits(self, chunk: Chunk) -> bool:
        # A chunk larger than the whole buffer still goes through alone.
        return self.used + chunk.nbytes <= self.capacity or self.used == 0

    def held(self, access_key: str) -> int:
        """Bytes of ``access_key`` queued or in flight."""
        return self._held.get(access_key, 0)

    def _key_fits(self, chunk: Chunk) -> bool:
        # Likewise a chunk larger than a key's share goes through when the key holds nothing.
        if self.key_capacity is None:
            return True
        held = self.held(access_key_of(chunk.key))
        return held + chunk.nbytes <= self.key_capacity or held == 0

    def _over_quota(self, chunk: Chunk) -> QuotaExceeded:
        key = access_key_of(chunk.key)
        return QuotaExceeded(
            f"access key {key!r} holds {self.held(key)} bytes in the gateway's buffer, at its quota of "
            f"{self.key_capacity} (gateway.max_buffer_bytes_per_key)",
            quota="buffer",
        )

    def _add(self, chunk: Chunk) -> None:
        self._queue.append(chunk)
        self.used += chunk.nbytes
        key = access_key_of(chunk.key)
        self._held[key] = self.held(key) + chunk.nbytes
        self._changed.notify_all()

    def _remove(self, chunk: Chunk) -> None:
        self.used -= chunk.nbytes
        key = access_key_of(chunk.key)
        left = self.held(key) - chunk.nbytes
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)

    async def try_put(self, chunk: Chunk) -> bool:
        """Queue ``chunk`` if it fits now; False (and nothing dropped) if it does not."""
        async with self._changed:
            if not (self._fits(chunk) and self._key_fits(chunk)):
                return False
            self._add(chunk)
            return True

    async def _wait_for_room(self, chunk: Chunk) -> None:
        try:
            async with asyncio.timeout(self.block_timeout):
                await self._changed.wait_for(lambda: self._fits(chunk) and self._key_fits(chunk))
        except TimeoutError:
            if not self._key_fits(chunk):
                raise self._over_quota(chunk) from None
            raise BufferFull(
                f"the gateway's buffer stayed full for {self.block_timeout:g}s "
                "(Kafka is slow or unavailable)"
            ) from None

    async def put(self, chunk: Chunk) -> bool:
        """Queue ``chunk``; False when it was dropped. :class:`BufferFull` when ``block`` timed
        out, :class:`QuotaExceeded` when its key's share stayed (lossy: was) full."""
        async with self._changed:
            if not self._key_fits(chunk):
                if self.lossy:
                    raise self._over_quota(chunk)
                await self._wait_for_room(chunk)
            if not self._fits(chunk):
                if self.policy == "drop-newest":
                    self._drop(chunk, "buffer_full")
                    return False
                if self.policy == "drop-oldest":
                    while self._queue and not self._fits(chunk):
                        old = self._queue.popleft()
                        self._remove(old)
                        self._drop(old, "buffer_full")
                    if not self._fits(chunk):  # all that is left is in flight
                        self._drop(chunk, "buffer_full")
                        return False
                else:
                    await self._wait_for_room(chunk)
            self._add(chunk)
            return True

    def _drop(self, chunk: Chunk, reason: str) -> None:
        if not chunk.done.done():
            chunk.done.set_result(None)
        self._on_drop(chunk, reason)

    async def get(self) -> Chunk:
        """The oldest queued chunk; its bytes stay counted until :meth:`release`."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._queue))
            return self._queue.popleft()

    async def release(self, chunk: Chunk) -> None:
        """Kafka answered for ``chunk``: give its room back."""
        async with self._changed:
            self._remove(chunk)
            self._changed.notify_all()
