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
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sluice.ingress.exceptions import BufferFull

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
        self, capacity_bytes: int, policy: Policy, *, block_timeout: float, on_drop: DropHandler
    ) -> None:
        if capacity_bytes < 1:
            raise ValueError(f"capacity_bytes must be >= 1, got {capacity_bytes}")
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r}; expected one of {', '.join(POLICIES)}")
        if block_timeout <= 0:
            raise ValueError(f"block_timeout must be > 0, got {block_timeout}")
        self.capacity = capacity_bytes
        self.policy = policy
        self.block_timeout = block_timeout
        self._on_drop = on_drop
        self._queue: deque[Chunk] = deque()
        self.used = 0  # bytes queued or in flight
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

    async def try_put(self, chunk: Chunk) -> bool:
        """Queue ``chunk`` if it fits now; False (and nothing dropped) if it does not."""
        async with self._changed:
            if not self._fits(chunk):
                return False
            self._queue.append(chunk)
            self.used += chunk.nbytes
            self._changed.notify_all()
            return True

    async def put(self, chunk: Chunk) -> bool:
        """Queue ``chunk``; False when it was dropped. :class:`BufferFull` when ``block`` timed out."""
        async with self._changed:
            if not self._fits(chunk):
                if self.policy == "drop-newest":
                    self._drop(chunk, "buffer_full")
                    return False
                if self.policy == "drop-oldest":
                    while self._queue and not self._fits(chunk):
                        old = self._queue.popleft()
                        self.used -= old.nbytes
                        self._drop(old, "buffer_full")
                    if not self._fits(chunk):  # all that is left is in flight
                        self._drop(chunk, "buffer_full")
                        return False
                else:
                    try:
                        async with asyncio.timeout(self.block_timeout):
                            await self._changed.wait_for(lambda: self._fits(chunk))
                    except TimeoutError:
                        raise BufferFull(
                            f"the gateway's buffer stayed full for {self.block_timeout:g}s "
                            "(Kafka is slow or unavailable)"
                        ) from None
            self._queue.append(chunk)
            self.used += chunk.nbytes
            self._changed.notify_all()
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
            self.used -= chunk.nbytes
            self._changed.notify_all()
