"""``sluice send --follow FILE``: tail a growing file and send its new lines, like a collector agent.

The position reached is saved (``--state``, default ``FILE.sluice-pos``) only once the gateway
acknowledged every line before it, so a restarted follower resends nothing acknowledged and
skips nothing that was not. Lines sent but unacknowledged when the follower is killed are sent
again (at-least-once); a SIGINT or SIGTERM stop waits for the acknowledgement and loses nothing.
"""

from __future__ import annotations

import asyncio
import signal
from collections import deque
from collections.abc import AsyncIterator

from sluice.client import SluiceClient, log_envelope
from sluice.client.tail import FileTail, Position, PositionFile
from sluice.v1.envelope_pb2 import Envelope

# A stream is closed, hence acknowledged and the position saved, at least this often.
ACK_INTERVAL = 1.0


async def follow(
    client: SluiceClient,
    tail: FileTail,
    positions: PositionFile,
    stop: asyncio.Event,
    *,
    batch: int,
    source_id: str = "",
    ack_interval: float = ACK_INTERVAL,
) -> tuple[int, int]:
    """Send the lines of ``tail`` until ``stop`` is set; (lines read, lines acknowledged).

    Each stream is closed after ``ack_interval`` seconds, so positions are saved that often.
    """
    unacked: deque[Position] = deque()
    read = 0

    def acknowledged(count: int) -> None:
        for _ in range(count - 1):
            unacked.popleft()
        positions.save(unacked.popleft())

    async def batches() -> AsyncIterator[list[Envelope]]:
        nonlocal read
        async for lines in tail.batches(batch, stop):
            unacked.extend(position for _, position in lines)
            read += len(lines)
            yield [log_envelope(text, source_id=source_id) for text, _ in lines]

    accepted = await client.send_stream(batches(), max_stream_seconds=ack_interval, on_ack=acknowledged)
    return read, accepted


async def follow_until_signalled(
    client: SluiceClient, path: str, state: str, *, batch: int, source_id: str = ""
) -> tuple[int, int]:
    """:func:`follow` until SIGINT or SIGTERM; a second signal stops without waiting for the gateway."""
    positions = PositionFile(state)
    tail = FileTail(path, positions.load())
    stop = asyncio.Event()
    task = asyncio.ensure_future(follow(client, tail, positions, stop, batch=batch, source_id=source_id))

    def signalled() -> None:
        if stop.is_set():
            task.cancel()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled)
    try:
        return await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
