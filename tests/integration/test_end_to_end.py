"""One pipeline, all real: gRPC into the gateway, Tansu, the `sluice worker` process, chDB.

Envelopes with known timestamps go in; the exact rows in ClickHouse (read through the
worker's query endpoint, as `sluice query` does) and the exact lines of the per-key files
come out.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from sluice.client import (
    SluiceClient,
    counter_envelope,
    event_envelope,
    gauge_envelope,
    log_envelope,
    timer_envelope,
)
from sluice.cli.main import main
from sluice.crypto import generate_master_key
from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch
from sluice.streams import sketch
from sluice.streams.query import wait_caught_up
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key, read_topic

NS = 1_000_000_000
# A whole second two minutes ago: its windows close as soon as the worker sees them.
T0 = (time.time_ns() // NS - 120) * NS


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(settings) as gw:
        yield gw


def client_for(gateway: Gateway, key: str) -> SluiceClient:
    return SluiceClient(gateway.address, key, issue_token(gateway.settings.auth, key, 60))


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_logs_events_and_metrics_end_to_end(
    gateway: Gateway, worker_process: WorkerProcess, unique: str
) -> None:
    key_a = await add_key(gateway.keys, f"ak_a_{unique}")
    key_b = await add_key(gateway.keys, f"ak_b_{unique}")
    worker_process.start()

    async with client_for(gateway, key_a) as a, client_for(gateway, key_b) as b:
        assert await a.send([
            log_envelope("first line", timestamp=T0 + 1, source_id="web", instance_id="1", tags={"env": "prod"}),
            log_envelope(b"second line", error=True, timestamp=T0 + 2),
            event_envelope("deployed", "v1.2.3", timestamp=T0 + 3, source_id="ci"),
            counter_envelope("requests", 5, total=5, timestamp=T0 + 10, tags={"route": "/"}),
            counter_envelope("requests", 7, total=12, timestamp=T0 + 20, tags={"route": "/"}),
            counter_envelope("requests", 1, total=13, timestamp=T0 + NS + 5, tags={"route": "/"}),
            gauge_envelope({"cpu": (0.5, "ratio")}, timestamp=T0 + 100),
            gauge_envelope({"cpu": (0.75, "ratio")}, timestamp=T0 + 200),
            gauge_envelope({"cpu": (0.25, "ratio")}, timestamp=T0 + 300),
        ]) == 9
        # A stream of batches (BatchSender), with a timer in each.
        assert await a.send_stream([
            [timer_envelope("db.query", T0, T0 + 10_000_000, timestamp=T0 + 400)],
            [timer_envelope("db.query", T0, T0 + 30_000_000, timestamp=T0 + 500)],
        ]) == 2
        assert await b.send([log_envelope("tenant b", timestamp=T0 + 7, source_id="b-app")]) == 1

    await worker_process.caught_up()

    logs = await worker_process.query(
        "SELECT access_key, toUnixTimestamp64Nano(timestamp), source_id, instance_id, type, payload, tags "
        "FROM sluice.logs FINAL ORDER BY access_key, timestamp"
    )
    assert logs == [
        [key_a, T0 + 1, "web", "1", "OUT", "first line", {"env": "prod"}],
        [key_a, T0 + 2, key_a, "", "ERR", "second line", {}],
        [key_b, T0 + 7, "b-app", "", "OUT", "tenant b", {}],
    ]
    events = await worker_process.query(
        "SELECT access_key, toUnixTimestamp64Nano(timestamp), source_id, title, body FROM sluice.events FINAL"
    )
    assert events == [[key_a, T0 + 3, "ci", "deployed", "v1.2.3"]]

    metrics = await worker_process.query(
        "SELECT name, toUnixTimestamp(window_start), any(kind), any(unit), any(tags), sum(count), sum(sum), "
        "min(min), max(max), max(last).2 FROM sluice.metrics_1s "
        "GROUP BY access_key, name, series_id, window_start ORDER BY name, window_start"
    )
    s0 = T0 // NS
    assert metrics == [
        ["cpu", s0, "gauge", "ratio", {}, 3, 1.5, 0.25, 0.75, 0.25],
        ["db.query", s0, "timer", "ms", {}, 2, 40.0, 10.0, 30.0, 30.0],
        ["requests", s0, "counter", "", {"route": "/"}, 2, 12.0, 5.0, 7.0, 12.0],
        ["requests", s0 + 1, "counter", "", {"route": "/"}, 1, 1.0, 1.0, 1.0, 13.0],
    ]
    assert worker_process.status()["counters"]["dead_letters"] == 0

    assert worker_process.stop() == 0
    files = gateway.settings.files_dir
    assert sorted(p.name for p in (files / key_a).iterdir() if not p.name.startswith(".")) == [
        "events.jsonl", "logs.jsonl"
    ]
    assert read_lines(files / key_a / "logs.jsonl") == [
        {"timestamp": T0 + 1, "source_id": "web", "instance_id": "1", "type": "OUT", "payload": "first line", "tags": {"env": "prod"}},
        {"timestamp": T0 + 2, "source_id": key_a, "instance_id": "", "type": "ERR", "payload": "second line", "tags": {}},
    ]
    assert read_lines(files / key_a / "events.jsonl") == [
        {"timestamp": T0 + 3, "source_id": "ci", "instance_id": "", "title": "deployed", "body": "v1.2.3", "tags": {}}
    ]
    assert read_lines(files / key_b / "logs.jsonl") == [
        {"timestamp": T0 + 7, "source_id": "b-app", "instance_id": "", "type": "OUT", "payload": "tenant b", "tags": {}}
    ]


async def test_undecodable_record_goes_to_the_dead_letter_topic(
    gateway: Gateway, worker_process: WorkerProcess, settings: Settings, unique: str
) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}")
    worker_process.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    await producer.start()
    try:
        bad = await producer.send_and_wait(
            settings.kafka.raw_topic, b"\xff\xff not protobuf", key=key.encode(), partition=0,
            headers=[("content-type", b"application/x-sluice-batch+proto")],
        )
        odd = await producer.send_and_wait(
            settings.kafka.raw_topic, b"", key=key.encode(), partition=0,
            headers=[("content-type", b"text/plain")],
        )
    finally:
        await producer.stop()
    async with client_for(gateway, key) as client:
        assert await client.send([log_envelope("after the bad ones", timestamp=T0)]) == 1
    await worker_process.caught_up()

    assert await worker_process.query("SELECT payload FROM sluice.logs FINAL") == [["after the bad ones"]]
    dead = await read_topic(settings.kafka.bootstrap, settings.kafka.dlq_topic)
    assert [(r.key, r.value) for r in dead] == [(key.encode(), b"\xff\xff not protobuf"), (key.encode(), b"")]
    headers = [dict(r.headers) for r in dead]
    assert headers[0]["dlq-reason"].startswith(b"not an EnvelopeBatch: ")
    assert headers[1]["dlq-reason"] == b"no decoder for content type b'text/plain'"
    for h, record in zip(headers, (bad, odd)):
        assert (h["dlq-source-topic"], h["dlq-source-partition"], h["dlq-source-offset"]) == (
            settings.kafka.raw_topic.encode(), b"0", str(record.offset).encode()
        )
    assert worker_process.status()["counters"]["dead_letters"] == 2


async def test_encrypted_keys_are_not_plaintext_on_the_topic_and_decrypt_in_the_worker(
    settings: Settings, worker_process: WorkerProcess, unique: str
) -> None:
    settings.encryption.keys = {"k1": SecretStr(generate_master_key())}
    async with Gateway(settings) as gateway:
        secret = await add_key(gateway.keys, f"ak_sec_{unique}", encrypt=True)
        plain = await add_key(gateway.keys, f"ak_pub_{unique}")
        worker_process.start()
        async with client_for(gateway, secret) as a, client_for(gateway, plain) as b:
            assert await a.send([log_envelope("top secret payload", timestamp=T0)]) == 1
            assert await b.send([log_envelope("public payload", timestamp=T0)]) == 1
        await worker_process.caught_up()
        rows = await worker_process.query("SELECT access_key, payload FROM sluice.logs FINAL ORDER BY access_key")
    assert rows == [[plain, "public payload"], [secret, "top secret payload"]]
    records = {r.key.decode(): r for r in await read_topic(settings.kafka.bootstrap, settings.kafka.raw_topic)}
    assert b"top secret" not in records[secret].value
    assert dict(records[secret].headers)["key-id"] == b"k1"
    assert dict(records[secret].headers)["encryption"] == b"aes-256-gcm"
    assert b"public payload" in records[plain].value
    assert "key-id" not in dict(records[plain].headers)


async def test_a_sharded_key_spreads_over_partitions_and_merges_exactly(
    gateway: Gateway, worker_process: WorkerProcess, settings: Settings, unique: str
) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}")
    settings.worker.batch_bytes = 1  # each record a processing step of its own: the sums are still exact
    sources = [f"host-{i}" for i in range(30)]

    def load(batch: int) -> list[Envelope]:
        return [counter_envelope("requests", 1, timestamp=T0 + batch, source_id=s) for s in sources]

    async with client_for(gateway, key) as client:
        assert await client.send(load(0)) == 30  # one shard
        await gateway.keys.update(key, shards=3)  # resharded live, between two sends
        assert await client.send(load(1)) == 30
    worker_process.start()  # after the sends: its first batch holds all the records
    await worker_process.caught_up()

    records = await read_topic(gateway.settings.kafka.bootstrap, gateway.settings.kafka.raw_topic)
    assert sorted({r.key for r in records}) == [key.encode(), f"{key}:0".encode(), f"{key}:1".encode(), f"{key}:2".encode()]
    by_source: dict[str, set[bytes]] = {}
    for r in records:
        for env in EnvelopeBatch.FromString(r.value).batch:
            by_source.setdefault(env.source_id, set()).add(r.key)
    assert all(len(keys - {key.encode()}) == 1 for keys in by_source.values())  # one shard per source
    assert await worker_process.query(
        "SELECT sum(count), sum(sum) FROM sluice.metrics_1s WHERE name = 'requests'"
    ) == [[60, 60.0]]
    # Each partition's windows are emitted apart (shards on one partition share its windows):
    # the partials were stored apart, counted as the worker wrote them since ClickHouse may
    # merge their parts at any time, and merged by the query above.
    partitions = {r.partition for r in records}
    status = worker_process.status()
    assert status["rows_written"]["metrics_1s"] >= len(partitions)
    assert status["counters"]["steps"] == status["counters"]["records"] == len(records)  # batch_bytes = 1


async def test_audit_reconciles_windows_and_names_the_one_that_differs(
    gateway: Gateway, worker_process: WorkerProcess, unique: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}")
    worker_process.start()
    m0 = (T0 // NS // 60 - 2) * 60  # two whole minutes, a few minutes ago
    async with client_for(gateway, key) as client:
        for minute in (m0, m0 + 60):
            ts = minute * NS + 5 * NS
            assert await client.send(
                [log_envelope(f"line {i}", timestamp=ts + i) for i in range(3)]
                + [event_envelope("deploy", timestamp=ts)]
                + [counter_envelope("c", 1, timestamp=ts + i) for i in range(4)]
            ) == 8
    await worker_process.caught_up()
    for name, value in gateway.settings.to_env().items():
        monkeypatch.setenv(name, value)

    assert await asyncio.to_thread(main, ["audit", "--key", key, "--since", "30m", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["logs"], r["events"], r["points"], r["verdict"]) for r in report] == [(3, 1, 4, "ok"), (3, 1, 4, "ok")]

    assert worker_process.stop() == 0  # a line goes missing from a file
    logs = gateway.settings.files_dir / key / "logs.jsonl"
    lines = logs.read_text().splitlines()
    logs.write_text("\n".join(lines[:-1]) + "\n")
    assert await asyncio.to_thread(main, ["audit", "--key", key, "--since", "30m", "--format", "json"]) == 1
    out, err = capsys.readouterr()
    assert [r["verdict"] for r in json.loads(out)] == ["ok", "logs in files: 3 expected, 2 found"]
    assert err.startswith("1 of 2 window(s) differ from what the gateway acknowledged")


async def test_one_minute_windows_timer_quantiles_and_ttls(
    gateway: Gateway, worker_process: WorkerProcess, settings: Settings, unique: str
) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}")
    only_1s = await add_key(gateway.keys, f"ak_s_{unique}", routes={"metrics_1s": ["clickhouse"], "metrics_1m": []})
    files = await add_key(gateway.keys, f"ak_f_{unique}", routes={"metrics_1s": ["file"], "metrics_1m": ["file", "clickhouse"]})
    worker_process.start()
    m0 = (time.time_ns() // NS // 60 - 3) * 60  # a whole minute three minutes ago
    durations = [float(1 + (i * 37) % 500) for i in range(300)]  # ms, every value 1..500 in a shuffle
    envelopes = [
        counter_envelope("requests", 1, total=1, timestamp=m0 * NS),
        counter_envelope("requests", 2, total=3, timestamp=(m0 + 30) * NS),
        counter_envelope("requests", 4, total=7, timestamp=(m0 + 59) * NS + NS - 1),
        counter_envelope("requests", 8, total=15, timestamp=(m0 + 60) * NS),
    ] + [
        timer_envelope("db.query", (m0 + i % 60) * NS - int(ms * 1e6), (m0 + i % 60) * NS)
        for i, ms in enumerate(durations)
    ]
    async with client_for(gateway, key) as a, client_for(gateway, only_1s) as b, client_for(gateway, files) as c:
        assert await a.send(envelopes) == len(envelopes)
        assert await b.send([counter_envelope("requests", 1, timestamp=m0 * NS)]) == 1
        assert await c.send(envelopes[:4]) == 4
    assert await wait_caught_up(settings, worker_process.url, 30, ("metrics_1s", "metrics_1m"))

    per_minute = await worker_process.query(
        "SELECT access_key, name, toUnixTimestamp(window_start), sum(count), sum(sum), min(min), max(max), "
        f"max(last).2 FROM sluice.metrics_1m WHERE access_key = '{key}' GROUP BY access_key, name, series_id, window_start "
        "ORDER BY name, window_start"
    )
    assert per_minute == [
        [key, "db.query", m0, 300, sum(durations), 1.0, 500.0, durations[-1]],  # last: at m0 + 59s
        [key, "requests", m0, 3, 7.0, 1.0, 4.0, 7.0],
        [key, "requests", m0 + 60, 1, 8.0, 8.0, 8.0, 15.0],
    ]
    per_second = await worker_process.query(
        "SELECT access_key, sum(count), sum(sum) FROM sluice.metrics_1s WHERE name = 'requests' "
        "GROUP BY access_key ORDER BY access_key"
    )
    assert per_second == [[key, 4, 15.0], [only_1s, 1, 1.0]]

    # Routed to files: the same windows as lines (partials of one window add up), and the
    # 1s windows nowhere else.
    def file_windows(stream: str) -> list[list[object]]:
        totals: dict[int, list[object]] = {}
        for line in read_lines(gateway.settings.files_dir / files / f"{stream}.jsonl"):
            t = totals.setdefault(line["window_start"], [line["window_start"], 0, 0.0, line["max"]])
            t[1] += line["count"]  # type: ignore[operator]
            t[2] += line["sum"]  # type: ignore[operator]
            t[3] = max(t[3], line["max"])  # type: ignore[type-var]
        return sorted(totals.values())  # type: ignore[type-var]

    assert file_windows("metrics_1m") == [[m0, 3, 7.0, 4.0], [m0 + 60, 1, 8.0, 8.0]]
    assert file_windows("metrics_1s") == [[m0, 1, 1.0, 1.0], [m0 + 30, 1, 2.0, 2.0], [m0 + 59, 1, 4.0, 4.0], [m0 + 60, 1, 8.0, 8.0]]
    assert await worker_process.query(
        f"SELECT name, toUnixTimestamp(window_start), sum(count) FROM sluice.metrics_1m WHERE access_key = '{files}' "
        "GROUP BY name, window_start ORDER BY window_start"
    ) == [["requests", m0, 3], ["requests", m0 + 60, 1]]
    assert await worker_process.query(f"SELECT count() FROM sluice.metrics_1s WHERE access_key = '{files}'") == [[0]]

    # The 1s and 1m sketches (merged from many partials by sumMap) give the same quantiles.
    for table in ("metrics_1s", "metrics_1m"):
        ((merged,),) = await worker_process.query(f"SELECT sumMap(sketch) FROM sluice.{table} WHERE name = 'db.query'")
        assert sum(merged.values()) == 300
        ordered = sorted(durations)
        for q, got in zip((0.5, 0.9, 0.99), sketch.quantiles(merged, (0.5, 0.9, 0.99))):
            want = ordered[int(q * 299)]
            assert got is not None and abs(got - want) <= sketch.RELATIVE_ERROR * want, (table, q, got, want)

    ttls = dict(await worker_process.query(
        "SELECT name, extract(engine_full, 'TTL [^S]*') FROM system.tables WHERE database = 'sluice' "
        "AND name IN ('logs', 'events', 'metrics_1s', 'metrics_1m')"
    ))
    ch = settings.clickhouse
    assert ttls == {
        "logs": f"TTL toDateTime(timestamp) + toIntervalDay({ch.ttl_days_raw}) ",
        "events": f"TTL toDateTime(timestamp) + toIntervalDay({ch.ttl_days_raw}) ",
        "metrics_1s": f"TTL window_start + toIntervalDay({ch.ttl_days_1s}) ",
        "metrics_1m": f"TTL window_start + toIntervalDay({ch.ttl_days_1m}) ",
    }


async def test_throttled_logs_and_events_are_dropped_or_sampled_and_counted(
    gateway: Gateway, worker_process: WorkerProcess, unique: str
) -> None:
    drop = await add_key(gateway.keys, f"ak_d_{unique}", limits={"events_per_second": 5})
    sample = await add_key(
        gateway.keys, f"ak_s_{unique}",
        limits={"events_per_second": 2, "events_burst": 4, "over_limit": "sample", "sample_one_in": 4},
    )
    worker_process.start()
    async with client_for(gateway, drop) as d, client_for(gateway, sample) as s:
        assert await d.send(
            [log_envelope(f"d{i}", timestamp=T0 + i) for i in range(20)]
            + [counter_envelope("c", 1, timestamp=T0) for _ in range(30)]
        ) == 50
        assert await s.send([event_envelope(f"s{i}", "", timestamp=T0 + i) for i in range(20)]) == 20
    await worker_process.caught_up()

    assert await worker_process.query(
        "SELECT payload FROM sluice.logs FINAL ORDER BY batch_index"
    ) == [[f"d{i}"] for i in range(5)]
    # 4 pass (the burst), then 1 in 4 of the 16 over the limit: the 1st, 5th, 9th and 13th.
    assert await worker_process.query(
        "SELECT title FROM sluice.events FINAL ORDER BY batch_index"
    ) == [[f"s{i}"] for i in (0, 1, 2, 3, 4, 8, 12, 16)]
    assert await worker_process.query("SELECT sum(count) FROM sluice.metrics_1s") == [[30]]
    status = worker_process.status()
    assert status["throttle"] == {
        drop: {"passed": 5, "dropped": 15, "sampled": 0},
        sample: {"passed": 4, "dropped": 12, "sampled": 4},
    }
    assert status["counters"]["throttled"] == 27
    with urllib.request.urlopen(f"{worker_process.url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert f'sluice_worker_throttle_dropped_total{{access_key="{drop}"}} 15.0\n' in metrics
    assert f'sluice_worker_throttle_sampled_total{{access_key="{sample}"}} 4.0\n' in metrics
    assert "sluice_worker_throttled_total 27.0\n" in metrics
    assert len((gateway.settings.files_dir / drop / "logs.jsonl").read_text().splitlines()) == 5


async def test_points_later_than_max_lateness_are_dropped_and_counted(
    gateway: Gateway, worker_process: WorkerProcess, settings: Settings, unique: str
) -> None:
    key = await add_key(gateway.keys, f"ak_{unique}")
    settings.worker.max_lateness = 600.0  # ten minutes before the gateway took them
    worker_process.start()
    now = time.time_ns() // NS * NS
    async with client_for(gateway, key) as client:
        assert await client.send([
            counter_envelope("requests", 1, timestamp=now - 300 * NS),  # five minutes late: kept
            counter_envelope("requests", 2, timestamp=now - 3600 * NS),  # an hour late: dropped
            counter_envelope("requests", 4, timestamp=now - 2 * 3600 * NS),  # dropped
        ]) == 3
    assert await wait_caught_up(settings, worker_process.url, 30, ("metrics_1s", "metrics_1m"))
    assert await worker_process.query(
        f"SELECT sum(count), sum(sum) FROM sluice.metrics_1s WHERE access_key = '{key}'"
    ) == [[1, 1.0]]
    status = worker_process.status()
    assert (status["late"], status["counters"]["late"], status["counters"]["points"]) == ({key: 2}, 2, 1)
    assert f'sluice_worker_late_points_total{{access_key="{key}"}} 2' in urllib.request.urlopen(
        f"{worker_process.url}/metrics", timeout=5
    ).read().decode()
