"""What the embedded broker reports as a partition's end, which Faust recovers tables up to."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sluice.kafka import ensure_topics
from sluice.tansu import Tansu


async def end_offset(bootstrap: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def test_the_end_offset_is_one_past_the_last_batch_s_first_record(tansu: Tansu, unique: str) -> None:
    """Tansu answers the base offset of the last record batch plus one (Kafka: the last offset
    plus one). `FaustTableState.sync` exists for this: a record alone in the last batch."""
    bootstrap = tansu.bootstrap
    topic = f"end-offsets-{unique}"
    await ensure_topics(bootstrap, [topic], partitions=1)
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=50)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"v", key=b"k") for _ in range(3)]  # one batch
        await producer.flush()
        assert [(await f).offset for f in sent] == [0, 1, 2]
        assert await end_offset(bootstrap, tp) == 1
        await (await producer.send(topic, None, key=b"@sync"))  # alone in its batch
        assert await end_offset(bootstrap, tp) == 4
    finally:
        await producer.stop()
