"""``EnvelopeBatch`` bytes at the wire level: split into envelopes, and framed back together.

On the wire an ``EnvelopeBatch`` is its envelopes one after another, each as the tag of field 1
(length-delimited), a varint length and the envelope's bytes. :func:`envelope_bytes` splits a
batch into those envelope bytes without decoding the envelopes (upb does it in C, by reading the
batch as a message whose field 1 is ``repeated bytes``); :func:`frame_records` puts encoded
envelopes back into batches. Neither re-encodes an envelope: what a client sent is forwarded as
it came.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

BATCH_FIELD = 0x0A  # EnvelopeBatch.batch: field 1, wire type 2 (length-delimited)
_SHORT_PREFIXES = [bytes((BATCH_FIELD, n)) for n in range(0x80)]


def _frames_type() -> Any:
    """``message Frames { repeated bytes batch = 1; }``: an EnvelopeBatch whose envelopes stay bytes."""
    file = descriptor_pb2.FileDescriptorProto(name="sluice/ingress/frames.proto", package="sluice.ingress", syntax="proto3")
    message = file.message_type.add(name="Frames")
    message.field.add(
        name="batch", number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sluice.ingress.Frames"))


_FRAMES = _frames_type()


def envelope_bytes(batch: bytes) -> list[bytes]:
    """The envelopes of a serialized ``EnvelopeBatch``, each as the bytes it has on the wire.

    Only meaningful for bytes that decode as an ``EnvelopeBatch``: it does not check the envelopes.
    """
    return list(_FRAMES.FromString(batch).batch)


def _long_prefix(length: int) -> bytes:
    out = bytearray((BATCH_FIELD,))
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


_cached_prefix = functools.lru_cache(maxsize=4096)(_long_prefix)


def prefix(length: int) -> bytes:
    """Tag and varint length that put an encoded envelope of ``length`` bytes into an ``EnvelopeBatch``."""
    return _SHORT_PREFIXES[length] if length < 0x80 else _cached_prefix(length)


def frame_records(encoded: Sequence[bytes], max_record_bytes: int) -> list[bytes]:
    """Pack encoded envelopes, in order, into ``EnvelopeBatch`` values of at most ``max_record_bytes``.

    An envelope larger than the limit on its own still gets a record of its own.
    """
    if max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
    if not encoded:
        return []
    sizes = list(map(len, encoded))
    # Envelopes under 128 bytes (most of them) have a two-byte prefix: look it up, in C.
    prefixes = list(map(_SHORT_PREFIXES.__getitem__, sizes) if max(sizes) < 0x80 else map(prefix, sizes))
    if sum(sizes) + sum(map(len, prefixes)) <= max_record_bytes:
        parts: list[bytes] = [b""] * (2 * len(sizes))
        parts[0::2] = prefixes
        parts[1::2] = encoded
        return [b"".join(parts)]
    records: list[bytes] = []
    parts = []
    size = 0
    for head, data in zip(prefixes, encoded):
        framed = len(head) + len(data)
        if parts and size + framed > max_record_bytes:
            records.append(b"".join(parts))
            parts, size = [], 0
        parts += (head, data)
        size += framed
    if parts:
        records.append(b"".join(parts))
    return records


class Forwarded(list[bytes]):
    """Envelopes' bytes as they were received. ``batch`` is the ``EnvelopeBatch`` they came in
    when it holds exactly them, framed as :func:`frame_records` frames them, else None;
    ``nbytes`` is their total size."""

    __slots__ = ("batch", "nbytes")

    def __init__(self, encoded: list[bytes], batch: bytes | None, nbytes: int) -> None:
        super().__init__(encoded)
        self.batch = batch
        self.nbytes = nbytes


class Pending:
    """Encoded envelopes waiting to be published, taken in order; a run of them that arrived as
    one :class:`Forwarded` batch is taken already framed."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self._runs: deque[tuple[int, bytes | None]] = deque()  # (envelopes, their framed batch)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, encoded: list[bytes]) -> None:
        if not encoded:
            return
        self.items += encoded
        batch = encoded.batch if isinstance(encoded, Forwarded) else None
        if batch is None and self._runs and self._runs[-1][1] is None:
            self._runs[-1] = (self._runs[-1][0] + len(encoded), None)  # one run of unframed ones
        else:
            self._runs.append((len(encoded), batch))

    def take(self, n: int) -> tuple[list[bytes], bytes | None]:
        """The first ``n`` envelopes (or all there are), and their framed batch when they are
        whole forwarded runs (what :func:`frame_records` would make of them, without a size limit)."""
        taken = self.items[:n]
        del self.items[:n]
        batches: list[bytes] = []
        whole = True
        need = len(taken)
        while need:
            count, batch = self._runs.popleft()
            if count > need:
                self._runs.appendleft((count - need, None))
                count, batch = need, None
            if batch is None:
                whole = False
            elif whole:
                batches.append(batch)
            need -= count
        return taken, b"".join(batches) if whole and taken else None
