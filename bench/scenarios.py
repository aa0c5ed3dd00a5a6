"""The scenarios: each starts what it needs on the shared broker, drives a fixed seeded load
and returns result rows (Sluice first, then its references)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    Child,
    MiB,
    Row,
    encoded,
    envelopes,
    percentile,
    produce,
    progress,
    ratio_to,
    records_of,
)
from sluice.ingress.frames import varint
from sluice.keys.models import DEFAULT_ROUTES, AccessKeyConfig
from sluice.keys.store import JsonKeyStore
from sluice.settings import Settings
from sluice.tansu import free_port
from sluice.v1.envelope_pb2 import Envelope


@dataclass
class Context:
    """What a scenario gets: the broker, a scratch directory, and how big to make the load."""

    bootstrap: str
    work: Path
    quick: bool  # a smoke run: tiny loads, to prove the code works

    def settings(self, name: str, **overrides: Any) -> Settings:
        """Settings of one system under test: its own topics, group and data directory."""
        unique = f"{name}-{uuid.uuid4().hex[:6]}"
        kafka = {"bootstrap": self.bootstrap, "raw_topic": f"bench.raw.{unique}",
                 "dlq_topic": f"bench.dlq.{unique}", "config_topic": f"bench.config.{unique}", "partitions": 2}
        return Settings(
            data_dir=self.work / unique,
            kafka=kafka | overrides.pop("kafka", {}),
            auth={"jwt_secret": "bench-secret-" + secrets.token_hex(32)},
            gateway={"listen": "127.0.0.1:0", "metrics_listen": ""} | overrides.pop("gateway", {}),
            worker={"app_id": f"bench-worker-{unique}", "web_port": free_port()} | overrides.pop("worker", {}),
            **overrides,
        )


ACCESS_KEY = "ak_bench"


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000


def _mib(v: int) -> float:
    return v / MiB


# -- gateway -----------------------------------------------------------------------------------


async def gateway(ctx: Context) -> list[Row]:
    """Send, Sender and BatchSender into the gateway (which publishes to Kafka) and into a bare
    grpc.aio server that only parses the requests. Both servers run side by side; each method is
    driven in rounds that alternate which system goes first, and each row is its median round:
    on this machine one system's single run swung by a third from run to run."""
    from bench.load import Metadata, drive
    from sluice.ingress.auth import issue_token

    duration = 1.0 if ctx.quick else 6.0
    rounds = 1 if ctx.quick else 3
    data = encoded(envelopes(2_000 if ctx.quick else 20_000, seed=1))
    systems = {"sluice gateway": False, "bare grpc.aio server (ceiling)": True}
    children: dict[str, tuple[Child, int, Metadata]] = {}
    measured: dict[tuple[str, str], list[Row]] = {}
    methods = ("Send", "Sender", "BatchSender")
    try:
        for system, bare in systems.items():
            settings = ctx.settings("gateway-bare" if bare else "gateway")
            settings.data_dir.mkdir(parents=True)
            token = issue_token(settings.auth, ACCESS_KEY, 3600)
            metadata: Metadata = (("authorization", f"Bearer {token}"), ("x-access-key", ACCESS_KEY))
            child = Child("bench.gateway_server", ["--bare"] if bare else [], settings.to_env(),
                          settings.data_dir / "server.log")
            children[system] = (child, child.read_event(60)["port"], metadata)
        for r in range(rounds):
            order = list(systems) if r % 2 == 0 else list(reversed(systems))
            for method, per_call in zip(methods, (1, 500, 10)):
                for system in order:
                    child, port, metadata = children[system]
                    progress(f"gateway: {system}, {method} for {duration:g}s, round {r + 1}/{rounds}")
                    t0 = time.time()
                    result = await drive(f"127.0.0.1:{port}", metadata, method, data, per_call=per_call,
                                         duration=duration)
                    cpu, rss = child.meter.between(t0, time.time())
                    measured.setdefault((method, system), []).append(Row(
                        f"gateway {method}", system, "envelopes/s", result.envelopes / result.seconds,
                        _ms(percentile(result.latencies, 0.5)), _ms(percentile(result.latencies, 0.99)),
                        cpu, _mib(rss), count=result.envelopes,
                        note=(f"errors {result.errors}; " if result.errors else "")
                        + ("" if method == "Send" else f"{per_call} msgs/call; ") + "latency per call"
                        + (f"; median of {rounds} rounds" if rounds > 1 else ""),
                    ))
    finally:
        for child, _, _ in children.values():
            child.stop()
    rows = [  # the median round of each system and method
        sorted(measured[(method, system)], key=lambda run: run.throughput or 0.0)[rounds // 2]
        for system in systems for method in methods
    ]
    for row in rows:
        if row.system == "sluice gateway":
            ratio_to(rows, row)
    return rows


# -- worker ------------------------------------------------------------------------------------


async def _caught_up_worker(child: Child, url: str, expect_records: int, timeout: float) -> tuple[float, float, dict[str, Any]]:
    """Poll a Sluice worker's /status: (first record seen, all records durable, last status)."""
    from sluice.streams.query import worker_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{child.log_path.read_text(errors='replace')[-3000:]}")
        try:
            status = await asyncio.to_thread(worker_status, url, timeout=2)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        done = sum(o + 1 for o in status["positions"].values())
        if done >= expect_records:
            # The worker's own clock of its first record: /status cannot answer while a batch
            # is being decoded, so a poll would only see the first record once that is over.
            return float(status["first_record_at"]), time.time(), status
        await asyncio.sleep(0.2)  # /status scans the window state: polling costs the worker CPU
    raise RuntimeError(f"the worker did not process {expect_records} records in {timeout}s")


async def _reference(ctx: Context, child: Child, what: str, timeout: float) -> tuple[float, float, int]:
    event = await asyncio.to_thread(child.read_event, timeout)
    if "ready" in event:
        event = await asyncio.to_thread(child.read_event, timeout)
    return float(event["first"]), float(event["done"]), int(event["envelopes"])


async def worker(ctx: Context) -> list[Row]:
    """The same records (EnvelopeBatches of 500 envelopes: counters, gauges, logs over 1000 tag
    sets, about 6,700 envelopes per second of event time) through the Sluice worker, the same
    worker with the metrics routed to no sink (no windows), a raw decode loop, a naive Faust agent
    and Quix Streams. The load is several of the worker's batches (500
    records each), so a batch's collection wait is not most of what is timed."""
    n = 4_000 if ctx.quick else 1_000_000
    n_naive = 2_000 if ctx.quick else 20_000
    progress(f"worker: producing {n:,} envelopes")
    settings = ctx.settings("worker", worker={"session_timeout": 6.0})
    settings.data_dir.mkdir(parents=True)
    values = records_of(encoded(envelopes(n, seed=2, span_s=max(1.0, n / 6_667))))
    keys = [f"{ACCESS_KEY}_{i}".encode() for i in range(2)]
    from sluice.kafka import ensure_topics

    await ensure_topics(ctx.bootstrap, [settings.kafka.raw_topic], partitions=2)
    await produce(ctx.bootstrap, settings.kafka.raw_topic, keys, values)
    topic = settings.kafka.raw_topic
    rows: list[Row] = []
    timeout = 60 if ctx.quick else 240

    progress("worker: sluice worker (decode, 1s and 1m windows, file and ClickHouse sinks)")
    rows.append(await _sluice_worker(settings, "sluice worker", len(values), timeout))
    # The same worker with the keys' metrics routed to no sink: no windows, so what the windows
    # cost (their state, emissions and rows) is the difference between the two rows.
    progress("worker: sluice worker, metrics routed nowhere (no windows)")
    bare = ctx.settings("worker-no-windows", worker={"session_timeout": 6.0}, kafka={"raw_topic": topic})
    bare.data_dir.mkdir(parents=True)
    keystore = JsonKeyStore(bare.access_keys_path)
    routes = {stream: [] if stream.startswith("metrics") else sinks for stream, sinks in DEFAULT_ROUTES.items()}
    for key in keys:
        keystore.put(AccessKeyConfig(access_key=key.decode(), routes=routes))
    rows.append(await _sluice_worker(bare, "sluice worker, metrics routed nowhere (no windows)", len(values), timeout))

    refs: list[tuple[str, str, list[str], int]] = [
        ("raw aiokafka getmany + the worker's C decoder (ceiling)", "bench.raw_decode", ["--decoder", "sluice"], n),
        ("raw aiokafka getmany + protobuf decode", "bench.raw_decode", ["--decoder", "protobuf"], n),
        ("naive Faust agent, table update per event", "bench.naive_faust",
         ["--app-id", f"bench-naive-{uuid.uuid4().hex[:6]}", "--web-port", str(free_port()),
          "--datadir", str(settings.data_dir / "naive")], n_naive),
        ("Quix Streams tumbling 1s window", "bench.quix_app", ["--state-dir", str(settings.data_dir / "quix")], n),
    ]
    for system, module, extra, expect in refs:
        progress(f"worker: {system} ({expect:,} envelopes)")
        child = Child(module, ["--bootstrap", ctx.bootstrap, "--topic", topic, "--expect", str(expect), *extra],
                      {}, settings.data_dir / f"{module}.log")
        try:
            first, done, got = await _reference(ctx, child, system, timeout)
            cpu, rss = child.meter.between(first, done)
            rows.append(Row("worker", system, "envelopes/s", got / (done - first), cpu_s=cpu, rss_mib=_mib(rss),
                            count=got, note=f"{got:,} envelopes"))
        except Exception as exc:  # a reference that cannot run here is recorded, not fatal
            reason = str(exc).strip().splitlines()
            rows.append(Row("worker", system, "envelopes/s", None, note="could not run: " + _why(reason)))
        finally:
            child.stop(timeout=3)  # a reference keeps nothing worth a graceful stop
    ratio_to(rows, rows[0])
    ratio_to(rows, rows[1])
    return rows


async def _sluice_worker(settings: Settings, system: str, records: int, timeout: float) -> Row:
    """``sluice worker`` from the start of the raw topic until ``records`` records are durable."""
    from sluice.streams.query import worker_url

    child = Child("sluice.cli.main", ["worker"], settings.to_env(), settings.data_dir / "worker.log")
    try:
        first, done, status = await _caught_up_worker(child, worker_url(settings), records, timeout)
        cpu, rss = child.meter.between(first, done)
    finally:
        child.stop()
    c = status["counters"]
    return Row("worker", system, "envelopes/s", c["envelopes"] / (done - first), cpu_s=cpu, rss_mib=_mib(rss),
               count=c["envelopes"], note=f"{c['envelopes']:,} envelopes, {c['metric_rows']:,} metric rows, "
               f"rows written {status['rows_written']}")


def _why(lines: list[str]) -> str:
    interesting = [l for l in lines if "Error" in l or "error" in l or "Exception" in l] or lines
    return (interesting[-1] if interesting else "unknown")[:300].replace("|", "/")


# -- ClickHouse sink ------------------------------------------------------------------------------


async def clickhouse(ctx: Context) -> list[Row]:
    """The same log rows into chDB through the worker's ClickHouse sink (the decoded rows the
    pipeline hands it, deduplication token per block) and through a raw clickhouse-connect insert
    (row and column oriented)."""
    from bench.common import SelfMeter
    from sluice.streams.clickhouse import ClickHouse, migrate
    from sluice.streams.decode import LOG_COLUMNS, decode_batch
    from sluice.streams.sinks.clickhouse import ClickHouseSink

    n = 5_000 if ctx.quick else 300_000
    block = 1_000 if ctx.quick else 50_000
    progress(f"clickhouse: decoding {n:,} log rows")
    rows_all: list[list[Any]] = []
    for i, value in enumerate(records_of(encoded(envelopes(n, seed=3, logs=1.0)))):
        rows_all += decode_batch(value, ACCESS_KEY, 0, i).logs
    blocks = [rows_all[i:i + block] for i in range(0, len(rows_all), block)]
    # What a decoder emitting columns would hand over (built here, not timed).
    columns = [[list(c) for c in zip(*b)] for b in blocks]
    settings = ctx.settings("clickhouse")
    ch = ClickHouse(settings)
    await ch.start()
    client = await ch._run(ch._connected)
    await ch._run(migrate, client, "raw_insert")
    await ch._run(migrate, client, "raw_columnar")
    rounds = 1 if ctx.quick else 3

    async def measure(db: str, insert: Callable[[int, list[list[Any]]], Awaitable[None]]) -> tuple[float, list[float], float, int]:
        """Seconds, block latencies, CPU seconds and peak RSS of inserting every block into ``db``."""
        await ch._run(client.command, f"TRUNCATE TABLE {db}.logs")
        meter = SelfMeter()
        latencies = []
        t0 = time.perf_counter()
        for i, b in enumerate(blocks):
            t = time.perf_counter()
            await insert(i, b)
            latencies.append(time.perf_counter() - t)
        seconds = time.perf_counter() - t0
        cpu, rss = meter.stop()
        got = (await ch.query(f"SELECT count() FROM {db}.logs"))[1][0][0]
        if got != len(rows_all):
            raise RuntimeError(f"{db}.logs holds {got} rows, expected {len(rows_all)}")
        return seconds, latencies, cpu, rss

    sink = ClickHouseSink(ch)

    async def via_sink(i: int, b: list[list[Any]]) -> None:
        sink.add("logs", LOG_COLUMNS, b, f"bench-{uuid.uuid4().hex}")
        await sink.flush()

    same = {"optimize_on_insert": 0}  # the server-side setting the sink inserts with

    def raw_rows(b: list[list[Any]]) -> None:
        client.insert("raw_insert.logs", b, column_names=list(LOG_COLUMNS), settings=same)

    def raw_columns(i: int) -> None:
        client.insert("raw_columnar.logs", columns[i], column_names=list(LOG_COLUMNS), column_oriented=True, settings=same)

    systems: list[tuple[str, str, Callable[[int, list[list[Any]]], Awaitable[None]], str]] = [
        ("sluice ClickHouseSink", "sluice", via_sink,
         "decoded rows, turned into columns by the sink (timed), column-oriented insert with dedup tokens"),
        ("raw clickhouse-connect insert", "raw_insert", lambda i, b: ch._run(raw_rows, b), "row oriented"),
        ("raw clickhouse-connect columnar insert", "raw_columnar", lambda i, b: ch._run(raw_columns, i),
         "column oriented, columns ready (as a columnar decoder would give them)"),
    ]
    runs: dict[str, list[tuple[float, list[float], float, int]]] = {name: [] for name, *_ in systems}
    try:
        for r in range(rounds):  # rotating the order: background merges of one do not favour another
            for name, db, insert, _ in systems[r % 3:] + systems[:r % 3]:
                progress(f"clickhouse: {name}, round {r + 1}/{rounds}")
                runs[name].append(await measure(db, insert))
    finally:
        await ch.stop()
    out: list[Row] = []
    for name, _, _, note in systems:
        seconds, latencies, cpu, rss = sorted(runs[name], key=lambda m: m[0])[len(runs[name]) // 2]
        out.append(Row("clickhouse sink", name, "rows/s", len(rows_all) / seconds,
                       _ms(percentile(latencies, 0.5)), _ms(percentile(latencies, 0.99)), cpu, _mib(rss),
                       count=len(rows_all), note=f"{len(rows_all):,} rows in blocks of {block:,}, median of {rounds} rounds; "
                       f"latency per block; {note}"))
    ratio_to(out, out[0])
    return out


# -- end to end --------------------------------------------------------------------------------


Requests = Callable[[], list[tuple[bytes, int, int]]]  # each Send request, its envelopes and the logs among them


async def _paced_sends(target: str, metadata: tuple[tuple[str, str], ...], requests: Requests,
                       rate: float, duration: float, acks: list[tuple[float, int, int]]) -> float:
    """Send calls at ``rate`` envelopes/s for ``duration`` s, from up to 8 calls in flight,
    cycling through ``requests()``; (ack time, envelopes, logs) appended to ``acks``. Returns the
    achieved rate."""
    import grpc

    from sluice.v1.ingress_pb2 import SendResponse

    async with grpc.aio.insecure_channel(target) as channel:
        send = channel.unary_unary("/sluice.v1.Ingress/Send", request_serializer=lambda b: b,
                                   response_deserializer=SendResponse.FromString)
        loop = asyncio.get_running_loop()
        start, wall_start = loop.time(), time.time()
        slots = asyncio.Semaphore(8)
        tasks = []

        async def one(request: bytes, logs: int) -> None:
            try:
                response = await send(request, metadata=metadata)
                acks.append((time.time(), response.accepted, logs))
            finally:
                slots.release()

        i = sent = 0
        while (due := start + sent / rate) < start + duration:
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            await slots.acquire()
            current = requests()
            request, envelopes, logs = current[i % len(current)]
            tasks.append(asyncio.ensure_future(one(request, logs)))
            i, sent = i + 1, sent + envelopes
        await asyncio.gather(*tasks)
        acked = sum(n for _, n, _ in acks)
        return acked / (max(t for t, _, _ in acks) - wall_start) if acks else 0.0


class _LiveRequests:
    """Send requests of ``batch`` envelopes whose timestamps follow the wall clock, as a live
    source's do: every ``refresh`` seconds each envelope is stamped with the time then. The
    timestamp is an envelope's first field, a varint of 9 bytes for any time from 1972 to 2262,
    so stamping replaces those bytes; nothing is encoded again."""

    def __init__(self, envs: list[Envelope], batch: int = 500, refresh: float = 0.5) -> None:
        self._encoded = [e.SerializeToString() for e in envs]
        if not all(b[0] == 0x08 and all(x & 0x80 for x in b[1:9]) and b[9] < 0x80 for b in self._encoded):
            raise ValueError("every envelope needs a timestamp of 9 varint bytes as its first field")
        self._logs = [sum(e.HasField("log") for e in envs[i:i + batch]) for i in range(0, len(envs) - batch + 1, batch)]
        self._batch = batch
        self._refresh = refresh
        self._at = -refresh
        self._requests: list[tuple[bytes, int, int]] = []

    def __call__(self) -> list[tuple[bytes, int, int]]:
        now = time.monotonic()
        if now - self._at >= self._refresh:
            from bench.load import batch_bytes

            self._at = now
            stamp = b"\x08" + varint(time.time_ns())
            stamped = [stamp + b[10:] for b in self._encoded]
            self._requests = [
                (batch_bytes(stamped[i * self._batch:(i + 1) * self._batch]), self._batch, logs)
                for i, logs in enumerate(self._logs)
            ]
        return self._requests


async def e2e(ctx: Context) -> list[Row]:
    """Gateway and worker on one broker: log envelopes at a fixed rate, acknowledged-to-queryable
    latency; then rising rates of a live mix of logs and metrics, the highest one the worker keeps
    up with."""
    from sluice.ingress.auth import issue_token
    from sluice.streams.query import admin_credential, query_worker, worker_url

    rate = 2_000 if ctx.quick else 20_000
    duration = 2.0 if ctx.quick else 10.0
    settings = ctx.settings("e2e", worker={"session_timeout": 6.0}, query={"admin_token": secrets.token_hex(32)})
    settings.data_dir.mkdir(parents=True)
    env = settings.to_env()
    gw = Child("bench.gateway_server", [], env, settings.data_dir / "gateway.log")
    wk = Child("sluice.cli.main", ["worker"], env, settings.data_dir / "worker.log")
    rows: list[Row] = []
    try:
        port = gw.read_event(60)["port"]
        url = worker_url(settings)
        from sluice.streams.query import worker_status

        deadline = time.monotonic() + 60
        while True:
            try:
                if worker_status(url, timeout=1)["partitions"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or wk.proc.poll() is not None:
                raise RuntimeError(f"the worker did not start:\n{wk.log_path.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.2)
        token = issue_token(settings.auth, ACCESS_KEY, 3600)
        metadata = (("authorization", f"Bearer {token}"), ("x-access-key", ACCESS_KEY))
        # Logs only: a log is queryable as soon as its batch is committed (metrics wait for their window).
        from bench.load import batch_bytes

        data = encoded(envelopes(20_000, seed=4, logs=1.0, t0=time.time_ns() - 60 * 10**9))
        calls = [data[i:i + 500] for i in range(0, len(data), 500)]
        fixed = [(batch_bytes(call), len(call), len(call)) for call in calls]  # every envelope a log
        # The ramp: the worker scenario's mix (a quarter logs; counters and gauges over 1,000
        # series), stamped with the wall clock, so that windows are open and written as deltas
        # as a live source's are. The logs tell when the worker is done.
        live = _LiveRequests(envelopes(20_000, seed=4))
        target = f"127.0.0.1:{port}"

        async def count() -> int:
            sql = "SELECT count() FROM sluice.logs"
            return int((await asyncio.to_thread(query_worker, url, sql, token=admin_credential(settings)))[1][0][0])

        async def run_at(requests: Requests, rate: float, duration: float) -> tuple[float, list[float], float]:
            """Achieved rate, latencies (s) of the calls holding logs, seconds the worker needed
            after the last ack."""
            base = await count()
            acks: list[tuple[float, int, int]] = []
            seen: list[tuple[float, int]] = []
            sending = asyncio.ensure_future(_paced_sends(target, metadata, requests, rate, duration, acks))
            while not sending.done():
                seen.append((time.time(), await count() - base))
                await asyncio.sleep(0.05)
            achieved = sending.result()
            total = sum(logs for _, _, logs in acks)
            last_ack = max(t for t, _, _ in acks)
            drain_deadline = time.monotonic() + 120
            while seen[-1][1] < total and time.monotonic() < drain_deadline:
                await asyncio.sleep(0.05)
                seen.append((time.time(), await count() - base))
            latencies, cum, j = [], 0, 0
            for t_ack, _, logs in sorted(acks):
                if not logs:
                    continue
                cum += logs
                while j < len(seen) and (seen[j][1] < cum or seen[j][0] < t_ack):
                    j += 1
                if j == len(seen):
                    break
                latencies.append(seen[j][0] - t_ack)
            return achieved, latencies, max(0.0, seen[-1][0] - last_ack) if seen[-1][1] >= total else float("inf")

        progress(f"e2e: {rate:,} envelopes/s for {duration:g}s")
        t0 = time.time()
        achieved, latencies, _ = await run_at(lambda: fixed, rate, duration)
        t1 = time.time()
        gcpu, grss = gw.meter.between(t0, t1)
        wcpu, wrss = wk.meter.between(t0, t1)
        rows.append(Row("e2e fixed rate", "sluice (gateway + worker)", "envelopes/s", achieved,
                        _ms(percentile(latencies, 0.5)), _ms(percentile(latencies, 0.99)), gcpu + wcpu,
                        _mib(grss + wrss), note=f"acknowledged-to-queryable over {len(latencies)} calls of 500 logs; "
                        f"CPU gateway {gcpu:.1f}s + worker {wcpu:.1f}s; RSS gateway {_mib(grss):.0f} + worker {_mib(wrss):.0f} MiB"))
        best = None
        ramp = [4_000] if ctx.quick else [20_000, 40_000, 60_000, 80_000, 120_000, 160_000, 200_000, 250_000, 300_000, 400_000]
        beyond = ""  # what the first step not sustained did
        for step in ramp:
            progress(f"e2e: ramp {step:,} envelopes/s")
            achieved, latencies, drain = await run_at(live, step, 1.0 if ctx.quick else 5.0)
            kept_up = achieved >= 0.95 * step and drain <= 3.0
            progress(f"e2e: ramp {step:,}: sent {achieved:,.0f}/s, worker done {drain:.1f}s after the last ack")
            if not kept_up:
                beyond = f"; at {step // 1000}k: sent {achieved:,.0f}/s, worker done {drain:.1f}s after the last ack"
                break
            best = (step, achieved, latencies, drain)
        if best is not None:
            step, achieved, latencies, drain = best
            rows.append(Row("e2e max sustained", "sluice (gateway + worker)", "envelopes/s", achieved,
                            _ms(percentile(latencies, 0.5)), _ms(percentile(latencies, 0.99)),
                            note=f"a quarter logs, counters and gauges over 1,000 series, stamped with the wall clock; "
                            f"highest step of {'/'.join(f'{s // 1000}k' for s in ramp)} with all sent and the "
                            f"worker done ≤3s after the last ack (it was {drain:.1f}s){beyond}"))
        else:
            rows.append(Row("e2e max sustained", "sluice (gateway + worker)", "envelopes/s", None,
                            note="not even the first step was sustained"))
    finally:
        wk.stop()
        gw.stop()
    return rows


# -- memory ------------------------------------------------------------------------------------


def _metric_total(port: int, name: str) -> float:
    """The sum of a Prometheus counter's samples on the gateway's metrics port."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


async def memory(ctx: Context) -> list[Row]:
    """Peak RSS: the gateway under 10x the gateway scenario's concurrent BatchSender streams with
    the lossy drop-newest policy; the worker holding 100,000 active series in open windows."""
    from bench.load import drive
    from sluice.ingress.auth import issue_token
    from sluice.streams.query import worker_url

    rows: list[Row] = []
    settings = ctx.settings("overload", gateway={"buffer_policy": "drop-newest", "metrics_listen": "127.0.0.1:0"})
    settings.data_dir.mkdir(parents=True)
    token = issue_token(settings.auth, ACCESS_KEY, 3600)
    metadata = (("authorization", f"Bearer {token}"), ("x-access-key", ACCESS_KEY))
    data = encoded(envelopes(2_000 if ctx.quick else 20_000, seed=5))
    gw = Child("bench.gateway_server", [], settings.to_env(), settings.data_dir / "gateway.log")
    try:
        started = gw.read_event(60)
        concurrency, duration = (8, 1.0) if ctx.quick else (40, 8.0)
        progress(f"memory: gateway, {concurrency} BatchSender streams for {duration:g}s, policy drop-newest")
        t0 = time.time()
        result = await drive(f"127.0.0.1:{started['port']}", metadata, "BatchSender", data, per_call=10,
                             concurrency=concurrency, duration=duration)
        cpu, rss = gw.meter.between(t0, time.time())
        # A lossy policy answers a call once its envelopes are buffered: what was still on its way
        # to Kafka when the load stopped is settled (acknowledged or dropped) shortly after.
        deadline = time.monotonic() + 10
        while True:
            dropped = _metric_total(started["metrics_port"], "sluice_gateway_dropped_envelopes_total")
            acked = _metric_total(started["metrics_port"], "sluice_gateway_acknowledged_envelopes_total")
            if acked + dropped >= result.envelopes or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        rows.append(Row("memory: gateway overload", "sluice gateway (drop-newest)", "envelopes/s",
                        result.envelopes / result.seconds, _ms(percentile(result.latencies, 0.5)),
                        _ms(percentile(result.latencies, 0.99)), cpu, _mib(rss), count=result.envelopes,
                        note=f"{concurrency} concurrent streams (10x the gateway scenario); accepted "
                        f"{result.envelopes:,}, Kafka acknowledged {acked:,.0f}, dropped {dropped:,.0f}"
                        + (f"; errors {result.errors}" if result.errors else "")))
    finally:
        gw.stop()

    n, series = (4_000, 2_000) if ctx.quick else (300_000, 100_000)
    settings = ctx.settings("series", worker={"session_timeout": 6.0})
    settings.data_dir.mkdir(parents=True)
    progress(f"memory: worker, {n:,} metric envelopes over {series:,} series in one 1s window")
    from sluice.kafka import ensure_topics

    await ensure_topics(ctx.bootstrap, [settings.kafka.raw_topic], partitions=2)
    t0 = (time.time_ns() // 10**9 - 100) * 10**9
    values = records_of(encoded(envelopes(n, seed=6, series=series, logs=0.0, t0=t0, span_s=0.9)))
    await produce(ctx.bootstrap, settings.kafka.raw_topic, [f"{ACCESS_KEY}_{i}".encode() for i in range(2)], values)
    wk = Child("sluice.cli.main", ["worker"], settings.to_env(), settings.data_dir / "worker.log")
    try:
        first, done, status = await _caught_up_worker(wk, worker_url(settings), len(values), 60 if ctx.quick else 300)
        cpu, _ = wk.meter.between(first, done)
        c = status["counters"]
        rows.append(Row("memory: 100k series", "sluice worker", "envelopes/s", c["envelopes"] / (done - first),
                        cpu_s=cpu, rss_mib=_mib(wk.meter.peak_rss), count=c["envelopes"],
                        note=f"{c['envelopes']:,} envelopes, {c['metric_rows']:,} metric rows "
                        f"(distinct series x window); peak RSS over the whole run"))
    finally:
        wk.stop()
    return rows
