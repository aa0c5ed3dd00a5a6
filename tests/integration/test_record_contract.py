"""Readers of the raw topic by the record contract (sluice.records) against a real broker: the
audit expects a record appended twice (one batch id) once and leaves a record no worker can read
to the dead-letter topic; a DLQ replay warns of a letter that still cannot be read."""

from __future__ import annotations

import logging
import time

import pytest
from aiokafka import AIOKafkaProducer

from sluice.client import counter_envelope, event_envelope, log_envelope
from sluice.kafka import ensure_topics
from sluice.records import raw_headers
from sluice.settings import Settings
from sluice.streams.audit import expected_counts
from sluice.streams.dlq import dead_letter_headers, replay
from sluice.v1.envelope_pb2 import EnvelopeBatch

NS = 1_000_000_000


async def test_expected_counts_count_a_doubled_record_once_and_skip_unreadable_ones(
    settings: Settings, unique: str
) -> None:
    kafka = settings.kafka
    await ensure_topics(kafka.bootstrap, [kafka.raw_topic], partitions=2)
    key = f"ak_{unique}"
    start = int(time.time()) // 60 * 60 - 60
    ts = (start + 5) * NS
    batch = EnvelopeBatch(batch=[
        log_envelope("a", timestamp=ts), log_envelope("b", timestamp=ts + 60 * NS),
        event_envelope("deploy", timestamp=ts), counter_envelope("c", 1, timestamp=ts),
    ]).SerializeToString()
    twice = raw_headers()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(kafka.raw_topic, batch, key=key.encode(), partition=0, headers=twice)
        await producer.send_and_wait(kafka.raw_topic, batch, key=f"{key}:1".encode(), partition=1, headers=twice)
        await producer.send_and_wait(kafka.raw_topic, b"\xff", key=key.encode(), partition=0, headers=raw_headers())
        await producer.send_and_wait(kafka.raw_topic, batch, key=key.encode(), partition=1, headers=raw_headers())
        await producer.send_and_wait(kafka.raw_topic, batch, key=b"ak_someone_else", partition=0, headers=raw_headers())
    finally:
        await producer.stop()

    counts = await expected_counts(settings, key, start)

    assert {minute: dict(c) for minute, c in counts.items()} == {
        start: {"logs": 2, "events": 2, "points": 2},
        start + 60: {"logs": 2},
    }


async def test_a_replay_warns_of_each_letter_that_still_cannot_be_read(
    settings: Settings, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = settings.kafka
    await ensure_topics(kafka.bootstrap, [kafka.raw_topic, kafka.dlq_topic], partitions=1)
    good = EnvelopeBatch(batch=[log_envelope("decodes now", timestamp=1)]).SerializeToString()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        for offset, value in ((7, good), (8, b"\xff")):
            await producer.send_and_wait(
                kafka.dlq_topic, value, key=f"ak_{unique}".encode(),
                headers=raw_headers() + dead_letter_headers("no decoder", kafka.raw_topic, 0, offset),
            )
    finally:
        await producer.stop()

    with caplog.at_level(logging.WARNING, logger="sluice.streams.dlq"):
        sent = await replay(settings)

    assert [d.source for d in sent] == [f"{kafka.raw_topic}/0@7", f"{kafka.raw_topic}/0@8"]
    assert [r.getMessage() for r in caplog.records] == [
        f"replaying {kafka.raw_topic}/0@8, which still cannot be read (not an EnvelopeBatch: Error parsing "
        "message with type 'sluice.v1.EnvelopeBatch': Wire format was corrupt): it will come back"
    ]
