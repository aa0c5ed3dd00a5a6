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
from collections.abc import Iterator, Sequence
from typing import Any, cast, overload

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


def varint(n: int) -> bytes:
    """A non-negative int as a protobuf varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _long_prefix(length: int) -> bytes:
    return bytes((BATCH_FIELD,)) + varint(length)


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


class Forwarded(Sequence[bytes]):
    """The envelopes of a serialized ``EnvelopeBatch`` as they were received, split into their
    bytes only when asked (a batch published whole never is). ``batch`` is ``received`` when it
    holds exactly them, framed as :func:`frame_records` frames them, else None; ``nbytes`` is
    their total size. Only for bytes that hold nothing but envelopes (see :func:`envelope_bytes`)."""

    __slots__ = ("received", "batch", "nbytes", "_count", "_items")

    def __init__(self, received: bytes, count: int, nbytes: int, *, framed: bool) -> None:
        self.received = received
        self.batch = received if framed else None
        self.nbytes = nbytes
        self._count = count
        self._items: list[bytes] | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        return self.items()[index]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.items())

    def items(self) -> list[bytes]:
        """Each envelope's bytes."""
        if self._items is None:
            self._items = envelope_bytes(self.received)
        return self._items


class Pending:
    """Encoded envelopes waiting to be published, taken in order; runs of them that arrived as
    whole :class:`Forwarded` batches are taken as they came, framed and unsplit."""

    def __init__(self) -> None:
        self._runs: deque[Sequence[bytes]] = deque()  # framed Forwarded batches, or lists of ours
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, encoded: Sequence[bytes]) -> None:
        if not encoded:
            return
        self._count += len(encoded)
        if isinstance(encoded, Forwarded) and encoded.batch is not None:
            self._runs.append(encoded)
        elif self._runs and type(self._runs[-1]) is list:
            self._runs[-1].extend(encoded)  # one run of unframed ones
        else:
            self._runs.append(list(encoded))

    def take(self, n: int) -> tuple[Sequence[bytes], bytes | None]:
        """The first ``n`` envelopes (or all there are), and their framed batch when they are
        whole forwarded runs (what :func:`frame_records` would make of them, without a size limit)."""
        need = min(n, self._count)
        self._count -= need
        runs: list[Sequence[bytes]] = []
        while need:
            run = self._runs[0]
            if len(run) > need:
                items = list(run)
                run, self._runs[0] = items[:need], items[need:]
            else:
                self._runs.popleft()
            runs.append(run)
            need -= len(run)
        if runs and all(isinstance(r, Forwarded) and r.batch is not None for r in runs):
            if len(runs) == 1:
                return runs[0], cast(Forwarded, runs[0]).batch
            batch = b"".join(cast(Forwarded, r).received for r in runs)
            return Forwarded(batch, sum(map(len, runs)), sum(cast(Forwarded, r).nbytes for r in runs), framed=True), batch
        return [e for r in runs for e in r], None
