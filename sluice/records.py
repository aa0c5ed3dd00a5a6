"""The contract of a raw-topic record: its headers, its content types, and how it is read.

A record of the raw topic is one ``EnvelopeBatch`` of one access key: its key is the record key
of :mod:`sluice.shards` (``<access_key>`` or ``<access_key>:<shard>``), its value the batch,
AES-256-GCM encrypted when its access key asks for it. Its headers:

- ``content-type``: the value's format; :data:`DECODERS` maps it to a decoder (a record
  without one is an ``EnvelopeBatch``, as the first gateways wrote it).
- ``batch-id``: a random id per record, so a record appended twice (the producer is not
  idempotent: a send it retries can land twice; a DLQ replay keeps the original's id) is
  recognised as one by the audit. A chunk the gateway's spool sends again gets new ids.
- ``encryption`` and ``key-id``: the algorithm (a record of one this worker does not know is
  dead-lettered, naming it) and the master key's id of an encrypted value.

Records of earlier gateways also carry ``schema-version`` and ``access-key``; nothing reads
them (the content type names the format, the record key the access key), so they are no
longer written. The dead-letter topic adds the ``dlq-*`` headers named here
(:func:`sluice.streams.dlq.dead_letter_headers`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from sluice.crypto import ALGORITHM, DecryptError, Keyring
from sluice.shards import access_key_of
from sluice.streams.decode import Decoded, decode_batch
from sluice.streams.exceptions import DecodeError
from sluice.time_bounds import UNBOUNDED, Window

H_CONTENT_TYPE = "content-type"
CONTENT_TYPE_BATCH = b"application/x-sluice-batch+proto"  # an EnvelopeBatch
H_BATCH_ID = "batch-id"
H_ENCRYPTION = "encryption"
H_KEY_ID = "key-id"

# Headers of the dead-letter topic: why and from where a record was set aside.
H_DLQ_REASON = "dlq-reason"
H_DLQ_TOPIC = "dlq-source-topic"
H_DLQ_PARTITION = "dlq-source-partition"
H_DLQ_OFFSET = "dlq-source-offset"
DLQ_HEADERS = (H_DLQ_REASON, H_DLQ_TOPIC, H_DLQ_PARTITION, H_DLQ_OFFSET)
# On a record a DLQ replay sent back to the raw topic: ``<dlq topic>/<partition>@<offset>``.
H_REPLAYED_FROM = "dlq-replayed-from"

Headers = Sequence[tuple[str, bytes]]
Decoder = Callable[[bytes, str, int, int, Window], Decoded]

DECODERS: dict[bytes, Decoder] = {CONTENT_TYPE_BATCH: decode_batch}


class RawRecord(Protocol):
    """What :func:`decode_record` reads of a record (a consumer's record or the worker's)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Headers: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


def header(headers: Headers, name: str) -> bytes | None:
    """The value of the first header called ``name``; None when there is none."""
    for key, value in headers:
        if key == name:
            return value
    return None


def raw_headers(kid: str = "") -> list[tuple[str, bytes]]:
    """The headers of a record the gateway appends to the raw topic; ``kid`` is the master key's
    id when its value is encrypted."""
    headers = [(H_CONTENT_TYPE, CONTENT_TYPE_BATCH), (H_BATCH_ID, uuid.uuid4().hex.encode())]
    if kid:
        headers += [(H_ENCRYPTION, ALGORITHM), (H_KEY_ID, kid.encode())]
    return headers


def decoder_for(content_type: bytes | None) -> Decoder:
    """The decoder registered for a content type; records without one are EnvelopeBatches."""
    if content_type is None:
        return decode_batch
    try:
        return DECODERS[content_type]
    except KeyError:
        raise DecodeError(f"no decoder for content type {content_type!r}") from None


def decode_record(record: RawRecord, keyring: Keyring, window: Window = UNBOUNDED) -> Decoded:
    """The rows and points of a raw-topic record: decrypted (when its headers say it is) with
    ``keyring``, then decoded by its content type. :class:`DecodeError`, with the reason a
    dead letter carries, for one that cannot be read."""
    content_type = kid = algorithm = None
    for name, value in record.headers:
        if name == H_CONTENT_TYPE:
            content_type = value
        elif name == H_KEY_ID:
            kid = value
        elif name == H_ENCRYPTION:
            algorithm = value
    access_key = access_key_of(record.key)
    value = record.value or b""
    if kid is not None:
        if algorithm is not None and algorithm != ALGORITHM:
            raise DecodeError(f"cannot decrypt: unknown encryption algorithm {algorithm!r}")
        try:
            value = keyring.decrypt(access_key, kid.decode("utf-8", "replace"), value)
        except DecryptError as exc:
            raise DecodeError(str(exc)) from exc
    return decoder_for(content_type)(value, access_key, record.partition, record.offset, window)
