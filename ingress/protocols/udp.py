"""UDP listeners (Loggregator's legacy ingress): statsd and Influx line protocol datagrams.

UDP carries no credentials, so a listener is bound to one access key and everything it
receives is stored under that key, with its routes and limits. Datagrams are queued as they
arrive (a full queue drops and counts them, as a UDP socket would) and published together,
so a burst of small datagrams becomes few Kafka records. Malformed lines are counted by reason
and skipped; the other lines of their datagram are kept.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from sluice.exceptions import ConfigurationError, SluiceError
from sluice.ingress.protocols.ingest import Ingest
from sluice.keys import AccessKeyStore, validate_access_key
from sluice.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)


class ParsedLines(Protocol):
    envelopes: list[Envelope]
    malformed: list[tuple[str, str]]


Parser = Callable[[bytes], ParsedLines]


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, listener: UdpListener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._listener.received(data)


class UdpListener:
    """Receive datagrams on ``listen``, parse them with ``parser``, publish as ``access_key``."""

    RECEIVE_BUFFER_BYTES = 8 << 20

    def __init__(
        self,
        protocol: str,
        listen: tuple[str, int],
        access_key: str,
        parser: Parser,
        ingest: Ingest,
        keys: AccessKeyStore,
        *,
        queue_datagrams: int = 4096,
        batch_envelopes: int = 5000,
    ) -> None:
        if not access_key:
            raise ConfigurationError(
                f"the {protocol} UDP listener needs an access key",
                hint=f"set SLUICE_PROTOCOLS_{protocol.upper()}_ACCESS_KEY (UDP carries no credentials)",
            )
        try:
            validate_access_key(access_key)
        except SluiceError as exc:
            raise ConfigurationError(f"the {protocol} UDP listener's access key: {exc.message}", hint=exc.hint) from exc
        self.protocol = protocol
        self._listen = listen
        self.access_key = access_key
        self._parser = parser
        self._ingest = ingest
        self._keys = keys
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_datagrams)
        self._batch = batch_envelopes
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = listen[1]
        self.handled = 0  # datagrams parsed and published (or dropped), for tests and status

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self), local_addr=self._listen)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # room for bursts while the loop is busy; the kernel caps it at rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER_BYTES)
        self.port = transport.get_extra_info("sockname")[1]
        self._task = asyncio.create_task(self._run(), name=f"udp-{self.protocol}")
        log.info("%s UDP listener on %s:%d for access key %s", self.protocol, self._listen[0], self.port, self.access_key)

    async def stop(self) -> None:
        """Stop receiving and publish what was already received."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def received(self, data: bytes) -> None:
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self._drop("queue_full", 1)

    def _drop(self, reason: str, datagrams: int) -> None:
        self._ingest.metrics.udp_dropped.labels(self.protocol, reason).inc(datagrams)
        self.handled += datagrams

    async def _run(self) -> None:
        while True:
            datagrams = [await self._queue.get()]
            parsed = 0  # datagrams parsed (a parser failure drops only its own datagram)
            try:
                envelopes: list[Envelope] = []
                while True:
                    lines = self._parse(datagrams[-1])
                    if lines is not None:
                        envelopes += lines
                        parsed += 1
                    if len(envelopes) >= self._batch or self._queue.empty():
                        break
                    datagrams.append(self._queue.get_nowait())
                await self._publish(envelopes, parsed)
            except Exception:  # a bug must not stop the listener (nor leave stop() waiting)
                log.exception("%s: dropped %d datagram(s)", self.protocol, parsed)
                self._drop("error", parsed)
            finally:
                for _ in datagrams:
                    self._queue.task_done()

    def _parse(self, datagram: bytes) -> list[Envelope] | None:
        """The datagram's envelopes (its malformed lines counted), or None, counted as dropped, if
        the parser failed on it."""
        try:
            parsed = self._parser(datagram)
        except Exception:
            log.exception("%s: the parser failed on a datagram of %d bytes; dropped it", self.protocol, len(datagram))
            self._drop("error", 1)
            return None
        for reason, message in parsed.malformed:
            self._ingest.metrics.malformed.labels(self.protocol, reason).inc()
            log.debug("%s: skipped a malformed line: %s", self.protocol, message)
        return parsed.envelopes

    async def _publish(self, envelopes: list[Envelope], datagrams: int) -> None:
        if not datagrams:
            return
        config = self._keys.get(self.access_key)
        if config is None or not config.enabled:
            log.warning("%s: access key %r is unknown or disabled; dropped %d datagram(s)",
                        self.protocol, self.access_key, datagrams)
            self._drop("unknown_key", datagrams)
            return
        try:
            if envelopes:
                await self._ingest.publish(config, envelopes, self.protocol)
        except SluiceError as exc:
            log.warning("%s: dropped %d datagram(s): %s", self.protocol, datagrams, exc)
            self._drop(type(exc).__name__, datagrams)
            return
        self.handled += datagrams
