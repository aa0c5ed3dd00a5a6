"""The on-disk spool of the ``spool`` buffer policy: what Kafka cannot take now, kept in order.

Segments ``<n>.seg`` in the spool directory hold entries, each framed as
``length (4) | crc32 (4) | payload``; the payload is the spool time (8, float), the envelope
count (4), the access key and the encryption key id (2 + bytes each, the id empty when the
records are not encrypted) and the records (4 + bytes each). Entries are appended
and fsynced before a call is acknowledged. Replay reads from the oldest segment; a ``<n>.pos``
file remembers how far a segment was replayed, so a restart does not replay it again. An entry
that fails its checksum (or is cut short) sends the rest of its segment to ``<n>.corrupt``:
quarantined and counted, never replayed, never blocking what follows.

Methods do blocking file I/O: call them from one thread (the publisher uses a one-thread
executor).
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sluice.ingress.exceptions import SpoolFull

_FRAME = struct.Struct(">II")  # length, crc32
_HEAD = struct.Struct(">dIHH")  # spooled at, envelopes, key length, key id length
_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    key: bytes
    records: list[bytes]
    envelopes: int
    kid: str
    spooled_at: float
    segment: int
    end: int  # offset in the segment just after this entry


def _encode(key: bytes, records: list[bytes], envelopes: int, kid: str, at: float) -> bytes:
    kid_bytes = kid.encode()
    parts = [_HEAD.pack(at, envelopes, len(key), len(kid_bytes)), key, kid_bytes]
    for record in records:
        parts += (_LEN.pack(len(record)), record)
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> tuple[bytes, list[bytes], int, str, float]:
    at, envelopes, key_len, kid_len = _HEAD.unpack_from(payload)
    pos = _HEAD.size + key_len + kid_len
    key = payload[_HEAD.size : _HEAD.size + key_len]
    kid = payload[_HEAD.size + key_len : pos].decode()
    records = []
    while pos < len(payload):
        (n,) = _LEN.unpack_from(payload, pos)
        records.append(payload[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return key, records, envelopes, kid, at


class Spool:
    """A bounded FIFO of chunks on disk, replayed in order."""

    def __init__(
        self, directory: Path, *, max_bytes: int, segment_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        if segment_bytes < 1024 or max_bytes < segment_bytes:
            raise ValueError(f"need 1024 <= segment_bytes <= max_bytes, got {segment_bytes} and {max_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._clock = clock
        self.corrupt_segments = 0
        self._segments = sorted(int(p.stem) for p in self.directory.glob("*.seg"))
        self._write_segment = self._segments[-1] if self._segments else 0
        self._oldest: float | None = None

    def _seg(self, n: int) -> Path:
        return self.directory / f"{n:012d}.seg"

    def _pos_path(self, n: int) -> Path:
        return self.directory / f"{n:012d}.pos"

    def _position(self, n: int) -> int:
        try:
            return int(self._pos_path(n).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    @property
    def size(self) -> int:
        """Bytes on disk, replayed or not."""
        return sum(self._seg(n).stat().st_size for n in self._segments if self._seg(n).exists())

    @property
    def empty(self) -> bool:
        return not self._segments

    def oldest_age(self) -> float:
        """Seconds the oldest entry not yet replayed has been waiting (0 when empty)."""
        if self._oldest is None:
            entry = self.peek()
            self._oldest = entry.spooled_at if entry else None
        return 0.0 if self._oldest is None else max(0.0, self._clock() - self._oldest)

    def append(self, key: bytes, records: list[bytes], envelopes: int, kid: str = "") -> None:
        """Write one chunk durably; :class:`SpoolFull` when it would pass ``max_bytes``."""
        data = _encode(key, records, envelopes, kid, self._clock())
        if self.size + len(data) > self.max_bytes:
            raise SpoolFull(
                f"the gateway's spool is full ({self.max_bytes} bytes) and Kafka is not taking records",
                hint="raise gateway.spool_max_bytes or bring Kafka back",
            )
        path = self._seg(self._write_segment)
        if self._segments and path.exists() and path.stat().st_size + len(data) > self.segment_bytes:
            self._write_segment += 1
            path = self._seg(self._write_segment)
        if not self._segments or self._segments[-1] != self._write_segment:
            self._segments.append(self._write_segment)
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def peek(self) -> SpoolEntry | None:
        """The next entry to replay, or None; corrupt tails are quarantined on the way."""
        while self._segments:
            n = self._segments[0]
            pos = self._position(n)
            try:
                with open(self._seg(n), "rb") as f:
                    f.seek(pos)
                    frame = f.read(_FRAME.size)
                    if not frame:
                        if n == self._write_segment:
                            return None
                        self._remove(n)
                        continue
                    if len(frame) < _FRAME.size:
                        raise ValueError("cut short")
                    length, crc = _FRAME.unpack(frame)
                    payload = f.read(length)
                    if len(payload) < length or zlib.crc32(payload) != crc:
                        raise ValueError("checksum mismatch")
            except FileNotFoundError:
                self._segments.pop(0)
                continue
            except ValueError:
                self._quarantine(n)
                continue
            key, records, envelopes, kid, at = _decode(payload)
            return SpoolEntry(key, records, envelopes, kid, at, n, pos + _FRAME.size + length)
        return None

    def advance(self, entry: SpoolEntry) -> None:
        """``entry`` reached Kafka: move past it (a fully replayed segment is deleted)."""
        tmp = self._pos_path(entry.segment).with_suffix(".tmp")
        tmp.write_text(str(entry.end))
        os.replace(tmp, self._pos_path(entry.segment))
        self._oldest = None
        if entry.segment != self._write_segment and entry.end >= self._seg(entry.segment).stat().st_size:
            self._remove(entry.segment)
        elif entry.segment == self._write_segment and entry.end >= self._seg(entry.segment).stat().st_size:
            self._remove(entry.segment)
            self._write_segment += 1

    def _remove(self, n: int) -> None:
        self._seg(n).unlink(missing_ok=True)
        self._pos_path(n).unlink(missing_ok=True)
        if self._segments and self._segments[0] == n:
            self._segments.pop(0)

    def _quarantine(self, n: int) -> None:
        self.corrupt_segments += 1
        os.replace(self._seg(n), self.directory / f"{n:012d}.corrupt")
        self._pos_path(n).unlink(missing_ok=True)
        self._segments.remove(n)
        if n == self._write_segment:
            self._write_segment += 1
