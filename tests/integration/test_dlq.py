"""`sluice dlq list|replay`: dead letters listed with reason and source; a replay sends each
record back to the raw topic once, and what decodes now is stored."""

from __future__ import annotations

import json

from aiokafka import AIOKafkaProducer

from sluice.client import log_envelope
from sluice.ingress import Gateway
from sluice.streams.dlq import dead_letter_headers
from sluice.v1.envelope_pb2 import EnvelopeBatch
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key, read_topic
from tests.integration.test_end_to_end import T0, gateway  # noqa: F401 (a fixture)
from tests.integration.test_query_cli import sluice

CT = ("content-type", b"application/x-sluice-batch+proto")


async def test_list_and_replay_dead_letters(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    settings = gateway.settings
    key = await add_key(gateway.keys, f"ak_{unique}")
    worker_process.start()
    good = EnvelopeBatch(batch=[log_envelope("decodes now", timestamp=T0)]).SerializeToString()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    await producer.start()
    try:
        bad = await producer.send_and_wait(settings.kafka.raw_topic, b"\xff", key=key.encode(), partition=1, headers=[CT])
        # A dead letter from an older worker that had no decoder for it.
        await producer.send_and_wait(
            settings.kafka.dlq_topic, good, key=key.encode(), partition=0,
            headers=[CT, *dead_letter_headers("no decoder (old worker)", settings.kafka.raw_topic, 0, 7)],
        )
    finally:
        await producer.stop()
    await worker_process.caught_up()

    listed = await sluice(settings, "dlq", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = sorted(json.loads(listed.stdout), key=lambda r: (r["reason"]))
    assert [(r["key"], r["source"], r["replayed"], r["reason"].split(":")[0]) for r in rows] == [
        (key, f"{settings.kafka.raw_topic}/0@7", False, "no decoder (old worker)"),
        (key, f"{settings.kafka.raw_topic}/1@{bad.offset}", False, "not an EnvelopeBatch"),
    ]

    # Stopped, the worker cannot dead-letter a replayed record again between the two replays.
    assert worker_process.stop() == 0
    replayed = await sluice(settings, "dlq", "replay")
    assert (replayed.returncode, replayed.stdout) == (0, f"replayed 2 records to {settings.kafka.raw_topic}\n")
    again = await sluice(settings, "dlq", "replay")
    assert again.stdout == f"replayed 0 records to {settings.kafka.raw_topic}\n"
    worker_process.start()
    await worker_process.caught_up()

    assert await worker_process.query("SELECT payload FROM sluice.logs FINAL") == [["decodes now"]]
    raw = await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic)
    back = [r for r in raw if "dlq-replayed-from" in dict(r.headers)]
    assert sorted((r.value, sorted(dict(r.headers))) for r in back) == [
        (good, ["content-type", "dlq-replayed-from"]), (b"\xff", ["content-type", "dlq-replayed-from"])
    ]
    # The record that still does not decode is a dead letter again, not replayed yet.
    listed = json.loads((await sluice(settings, "dlq", "list", "--format", "json")).stdout)
    assert [(r["replayed"], r["reason"].split(":")[0]) for r in listed if not r["replayed"]] == [
        (False, "not an EnvelopeBatch")
    ]
    assert len(listed) == 3
    assert worker_process.status()["counters"]["dead_letters"] == 1  # since the restart
