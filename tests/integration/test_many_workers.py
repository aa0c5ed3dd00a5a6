"""Two `sluice worker` processes in one consumer group on Tansu: the partitions are split
between them; one is killed, the other takes its partitions over and goes on, exactly.

Each worker embeds its own chDB here (one process owns a chDB directory), so the totals are the
sum of both databases; with a ClickHouse server they would share one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from sluice.client import SluiceClient, counter_envelope, log_envelope
from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from sluice.streams.query import end_offsets
from sluice.tansu import free_port
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key

NS = 1_000_000_000
T0 = (time.time_ns() // NS - 300) * NS


async def until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.25)


async def committed(settings: Settings, partitions: int) -> dict[int, int]:
    """The group's committed offsets (read without joining the group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=settings.worker.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        topic = settings.kafka.raw_topic
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


def totals_of(data_dir: str, env: dict[str, str]) -> list[list[object]]:
    """Read a stopped worker's chDB with `sluice query` (no worker answers, so it opens chDB)."""
    run = subprocess.run(
        [sys.executable, "-m", "sluice.cli.main", "query", "--format", "json",
         "SELECT (SELECT count() FROM sluice.logs FINAL) AS logs, "
         "(SELECT sum(count) FROM sluice.metrics_1s) AS points"],
        env=env | {"SLUICE_DATA_DIR": data_dir}, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)[0]
    return [[int(row["logs"]), int(row["points"] or 0)]]


async def test_partitions_split_and_are_taken_over(settings: Settings, unique: str) -> None:
    settings.kafka.partitions = 4
    settings.worker.session_timeout = 6.0
    a_settings = settings.model_copy(deep=True)
    b_settings = settings.model_copy(deep=True)
    b_settings.data_dir = settings.data_dir.parent / "worker-b"
    b_settings.worker.web_port = free_port()
    async with Gateway(settings) as gateway:
        key = await add_key(gateway.keys, f"ak_{unique}")
        a, b = WorkerProcess(a_settings).start(), WorkerProcess(b_settings)
        try:
            b.start()
            await until(lambda: sorted(a.status()["partitions"] + b.status()["partitions"]) == [0, 1, 2, 3]
                        and a.status()["partitions"] and b.status()["partitions"], 60, "the workers split the partitions")

            async def load(batch: int) -> None:
                envelopes = [log_envelope(f"b{batch} line {i}", timestamp=T0 + batch * NS, source_id=f"src{i}")
                             for i in range(40)]
                envelopes += [counter_envelope("n", 1, timestamp=T0 + batch * NS, source_id=f"src{i}") for i in range(40)]
                async with SluiceClient(gateway.address, key, issue_token(settings.auth, key, 60)) as client:
                    # one record per source: the key is sharded so its records reach every partition
                    for i in range(0, 80, 10):
                        assert await client.send(envelopes[i : i + 10]) == 10

            await gateway.keys.update(key, shards=8)
            await load(0)

            def done() -> bool:
                ends = asyncio.run(end_offsets(settings.kafka.bootstrap, settings.kafka.raw_topic))
                return asyncio.run(committed(settings, 4)) == ends and not any(
                    n for w in (a, b) for n in w.status()["open_windows"].values()
                )

            await until(done, 60, "both workers processed, closed and committed everything")
            a.kill()
            await until(lambda: b.status()["partitions"] == [0, 1, 2, 3], 90, "the survivor took every partition")
            await load(1)
            await b.caught_up(60)
            assert b.stop() == 0
        finally:
            for w in (a, b):
                if w.proc is not None and w.proc.poll() is None:
                    w.kill()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    both = [totals_of(str(s.data_dir), env)[0] for s in (a_settings, b_settings)]
    assert [sum(t[0] for t in both), sum(t[1] for t in both)] == [80, 80]
    assert all(t[0] > 0 for t in both)  # both workers did part of the work
