"""The dead-letter topic: what the worker could not decode, listed and replayed.

A dead letter is the raw record as it was (key, value, headers) plus headers naming the
reason and the source position. Replaying sends it back to the raw topic without those headers
(with ``dlq-replayed-from`` instead) once the cause is fixed, e.g. a decoder added. How far
replays got is the committed offset of the consumer group ``<app_id>-dlq-replay``: a replay
continues where the last one stopped, so no record is replayed twice by two runs (a run that
dies between producing and committing replays its last records again; the worker's outputs
are idempotent per source record, but the raw topic gets new records, so they count again).
A replayed letter that still cannot be read (:func:`sluice.records.decode_record`) is sent all
the same, with a warning: it comes back to this topic.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from sluice.crypto import Keyring
from sluice.kafka import KafkaUnavailable
from sluice.records import (
    DLQ_HEADERS,
    H_DLQ_OFFSET,
    H_DLQ_PARTITION,
    H_DLQ_REASON,
    H_DLQ_TOPIC,
    H_REPLAYED_FROM,
    decode_record,
    header,
)
from sluice.settings import Settings
from sluice.streams.exceptions import DecodeError

log = logging.getLogger(__name__)


def dead_letter_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The headers the worker adds to a record it sends to the dead-letter topic."""
    return [
        (H_DLQ_REASON, reason.encode()),
        (H_DLQ_TOPIC, topic.encode()),
        (H_DLQ_PARTITION, str(partition).encode()),
        (H_DLQ_OFFSET, str(offset).encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    replayed: bool  # a replay has already sent it back

    def header(self, name: str) -> str:
        return (header(self.headers, name) or b"").decode("utf-8", "replace")

    @property
    def reason(self) -> str:
        return self.header(H_DLQ_REASON)

    @property
    def source(self) -> str:
        """``topic/partition@offset`` of the original record."""
        return f"{self.header(H_DLQ_TOPIC)}/{self.header(H_DLQ_PARTITION)}@{self.header(H_DLQ_OFFSET)}"


def replay_group(settings: Settings) -> str:
    return f"{settings.worker.app_id}-dlq-replay"


async def _read(settings: Settings, consumer: AIOKafkaConsumer) -> list[DeadLetter]:
    topic = settings.kafka.dlq_topic
    await consumer.topics()
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        return []
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    committed = {tp: (await consumer.committed(tp)) or 0 for tp in tps}
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    out: list[DeadLetter] = []
    while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
        for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
            out += [
                DeadLetter(
                    r.partition, r.offset, r.key, r.value or b"", tuple(r.headers), r.offset < committed[tp]
                )
                for r in batch
                if r.offset < ends[tp]
            ]
    return sorted(out, key=lambda d: (d.partition, d.offset))


async def list_dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every record of the dead-letter topic, by partition and offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=replay_group(settings), enable_auto_commit=False
    )
    await consumer.start()
    try:
        return await _read(settings, consumer)
    finally:
        await consumer.stop()


async def replay(settings: Settings) -> list[DeadLetter]:
    """Send the dead letters not replayed yet back to the raw topic; the ones sent."""
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=replay_group(settings), enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        todo = [d for d in await _read(settings, consumer) if not d.replayed]
        keyring = Keyring(settings.encryption)
        sent = []
        for d in todo:
            try:
                decode_record(d, keyring)
            except DecodeError as exc:
                log.warning("replaying %s, which still cannot be read (%s): it will come back", d.source, exc)
            headers = [(k, v) for k, v in d.headers if k not in DLQ_HEADERS]
            headers.append((H_REPLAYED_FROM, f"{kafka.dlq_topic}/{d.partition}@{d.offset}".encode()))
            sent.append(await producer.send(kafka.raw_topic, d.value, key=d.key, headers=headers))
        await asyncio.gather(*sent)  # every record acknowledged before the position moves
        if todo:
            last: dict[int, int] = {}
            for d in todo:
                last[d.partition] = max(last.get(d.partition, -1), d.offset)
            await consumer.commit(
                {TopicPartition(kafka.dlq_topic, p): OffsetAndMetadata(o + 1, "") for p, o in last.items()}
            )
        return todo
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"replaying {kafka.dlq_topic} failed: {exc!r}") from exc
    finally:
        await producer.stop()
        await consumer.stop()
