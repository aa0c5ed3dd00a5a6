"""Publishing validated envelopes to the raw topic, one ``EnvelopeBatch`` per Kafka record.

A record's value is the concatenation of length-delimited envelopes, which is exactly the
protobuf encoding of an ``EnvelopeBatch``: envelopes are serialized once (by the validator) and
never re-encoded. :meth:`Publisher.publish` returns only after Kafka acknowledged every record.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from sluice.exceptions import ConfigurationError
from sluice.ingress.exceptions import PublishFailed
from sluice.kafka import (
    CONTENT_TYPE_BATCH,
    H_ACCESS_KEY,
    H_BATCH_ID,
    H_CONTENT_TYPE,
    H_SCHEMA_VERSION,
    SCHEMA_VERSION,
    KafkaUnavailable,
)
from sluice.settings import KafkaSettings

# Room for the record's key, headers and framing on top of its value.
RECORD_OVERHEAD = 64 * 1024

_BATCH_FIELD = 0x0A  # EnvelopeBatch.batch: field 1, wire type 2 (length-delimited)
_SHORT_PREFIXES = [bytes((_BATCH_FIELD, n)) for n in range(0x80)]


def _prefix(length: int) -> bytes:
    """Tag and varint length that put an encoded envelope into an ``EnvelopeBatch``."""
    if length < 0x80:
        return _SHORT_PREFIXES[length]
    out = bytearray((_BATCH_FIELD,))
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def frame_records(encoded: Sequence[bytes], max_record_bytes: int) -> list[bytes]:
    """Pack encoded envelopes, in order, into ``EnvelopeBatch`` values of at most ``max_record_bytes``.

    An envelope larger than the limit on its own still gets a record of its own.
    """
    if max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
    records: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for data in encoded:
        prefix = _prefix(len(data))
        framed = len(prefix) + len(data)
        if parts and size + framed > max_record_bytes:
            records.append(b"".join(parts))
            parts, size = [], 0
        parts += (prefix, data)
        size += framed
    if parts:
        records.append(b"".join(parts))
    return records


class Publisher:
    """One Kafka producer (acks=all, not idempotent: Tansu lacks InitProducerId) for the raw topic."""

    def __init__(self, kafka: KafkaSettings, *, client_id: str = "sluice-gateway") -> None:
        if not kafka.bootstrap:
            raise ConfigurationError(
                "kafka.bootstrap is empty: the publisher needs a broker",
                hint="set SLUICE_KAFKA_BOOTSTRAP to host:port",
            )
        self.topic = kafka.raw_topic
        self._bootstrap = kafka.bootstrap
        self._client_id = client_id
        self._linger_ms = kafka.linger_ms
        self._max_record_bytes = kafka.max_record_bytes
        self._timeout = kafka.publish_timeout
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect to the broker; :class:`KafkaUnavailable` when it cannot be reached."""
        if self._producer is not None:
            return
        max_request = self._max_record_bytes + RECORD_OVERHEAD
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,
            linger_ms=self._linger_ms,
            max_request_size=max_request,
            max_batch_size=max_request,
            request_timeout_ms=int(self._timeout * 1000),
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise KafkaUnavailable(
                f"cannot connect to Kafka at {self._bootstrap}: {exc!r}",
                hint="is the broker running and is SLUICE_KAFKA_BOOTSTRAP right?",
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        """Send what is pending and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, access_key: str, encoded: Sequence[bytes]) -> int:
        """Publish encoded envelopes of one access key; the number published once Kafka acknowledged.

        Raises :class:`PublishFailed` (retriable, UNAVAILABLE) when Kafka fails or does not
        acknowledge within ``kafka.publish_timeout``; some records may have been stored then.
        """
        if not encoded:
            return 0
        if self._producer is None:
            raise RuntimeError("Publisher.publish() called before start()")
        key = access_key.encode()
        records = frame_records(encoded, self._max_record_bytes)
        what = f"{len(records)} record(s) on {self.topic!r}"
        try:
            async with asyncio.timeout(self._timeout):
                acks = [
                    await self._producer.send(self.topic, record, key=key, headers=self._headers(key))
                    for record in records
                ]
                await asyncio.gather(*acks)
        except TimeoutError as exc:
            raise PublishFailed(f"Kafka did not acknowledge {what} within {self._timeout:g}s") from exc
        except KafkaError as exc:
            raise PublishFailed(f"Kafka did not acknowledge {what}: {exc!r}") from exc
        return len(encoded)

    @staticmethod
    def _headers(key: bytes) -> list[tuple[str, bytes]]:
        return [
            (H_CONTENT_TYPE, CONTENT_TYPE_BATCH),
            (H_SCHEMA_VERSION, SCHEMA_VERSION),
            (H_BATCH_ID, uuid.uuid4().hex.encode()),
            (H_ACCESS_KEY, key),
        ]
