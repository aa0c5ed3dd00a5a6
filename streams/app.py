"""The Faust worker: one agent over the raw topic, a timer that closes quiet windows, and the
HTTP endpoints ``/status``, ``/metrics`` (Prometheus), ``/query`` (through which
``sluice query`` reads an embedded chDB that this process owns; see :mod:`sluice.streams.query_api`)
and the web console ``/console/`` (see :mod:`sluice.streams.console`).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import Any

import faust
from aiohttp.web import HTTPRequestEntityTooLarge
from faust.sensors import Sensor
from faust.types import TP
from faust.web import Request, Response, View

from sluice.crypto import Keyring
from sluice.kafka import ensure_topics_sync
from sluice.runtime import WORKER_FULL_COLLECTION_SECONDS
from sluice.keys import JsonKeyStore
from sluice.settings import Settings
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.config import ConfigFollower
from sluice.streams.console import mount as mount_console
from sluice.streams.continuity import Continuity
from sluice.streams.dlq import dead_letter_headers
from sluice.streams.pipeline import Pipeline, Record, steps
from sluice.streams.positions import Positions
from sluice.streams.prometheus import render
from sluice.streams.query_api import QueryApi, Refused
from sluice.streams.reader import Reader
from sluice.streams.sinks.clickhouse import ClickHouseSink, shard_clients
from sluice.streams.sinks.files import FileSink
from sluice.streams.state import FaustTableState, state_table
from sluice.streams.windows import TumblingWindows
from sluice.time_bounds import TimeBounds

log = logging.getLogger(__name__)


class RecordClock(Sensor):
    """When the consumer handed the worker its first and its latest record of one topic."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic
        self.first_at: float | None = None
        self.last_at: float | None = None

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        if tp.topic == self.topic:
            self.last_at = time.time()
            if self.first_at is None:
                self.first_at = self.last_at


def _headers(message: Any) -> list[tuple[str, bytes]]:
    headers = message.headers or ()
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


class Worker:
    """A Faust app wired to a :class:`Pipeline`; ``run()`` serves until SIGINT or SIGTERM."""

    def __init__(self, settings: Settings) -> None:
        kafka, worker = settings.kafka, settings.worker
        if not kafka.bootstrap:
            raise ValueError("kafka.bootstrap is empty: the worker needs a broker (SLUICE_KAFKA_BOOTSTRAP)")
        self.settings = settings
        self.app = faust.App(
            worker.app_id,
            broker=f"kafka://{kafka.bootstrap}",
            store=worker.store,
            autodiscover=False,
            datadir=str(settings.data_dir / "worker"),
            web_enabled=True,
            web_host=worker.web_host,
            web_port=worker.web_port,
            topic_partitions=kafka.partitions,
            topic_replication_factor=kafka.replication_factor,
            broker_session_timeout=worker.session_timeout,
            broker_heartbeat_interval=worker.heartbeat_interval,
            broker_rebalance_timeout=worker.rebalance_timeout,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            recovery_consistency_check=worker.recovery_consistency_check,
            # Window state is written in chunks of about 256 KiB; one series with the largest
            # tags the gateway allows still fits.
            producer_max_request_size=4 * 1024 * 1024,
            # Chunks of tens of KiB each went out as a batch of their own (the default is 16 KiB):
            # 82 MB of them took 0.24 CPU s and 0.62 s to be acknowledged, against 0.16 and 0.37 s.
            producer_max_batch_size=1024 * 1024,
            table_standby_replicas=0,
        )
        app = self.app
        self.raw = app.topic(
            kafka.raw_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.dlq = app.topic(
            kafka.dlq_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.record_clock = RecordClock(kafka.raw_topic)
        app.sensors.add(self.record_clock)
        self.clickhouse = ClickHouse(settings)
        self.shards = shard_clients(settings)  # a cluster's: each block goes to one shard's local table
        self.keys = JsonKeyStore(settings.access_keys_path, reload_interval=settings.gateway.keys_reload_interval)
        self.config = ConfigFollower(
            kafka.bootstrap, kafka.config_topic, self.keys.get, replication_factor=kafka.replication_factor
        )
        # Reads run on connections and threads apart from the inserts, once the schema is migrated.
        self.reader = Reader(settings, ready=self.clickhouse.ready)
        self.query_api = QueryApi(settings, self.reader, self.config.get)
        self._states: list[FaustTableState] = []
        self.pipeline = Pipeline(
            {
                "metrics_1s": self._windows("windows-1s", 1),
                "metrics_1m": self._windows("windows-1m", 60),
            },
            FileSink(
                settings.files_dir, max_bytes=worker.file_max_bytes, max_age=worker.file_max_age, keep=worker.file_keep
            ),
            ClickHouseSink(self.clickhouse, shards=self.shards),
            dead_letter=self._dead_letter,
            routes=self.config.get,
            flush_state=self._flush_producer,
            bounds=TimeBounds.of(settings),
            keyring=Keyring(settings.encryption),
            positions=Positions(self._state("positions")),
            max_lateness=worker.max_lateness,
        )
        self.continuity = Continuity(
            lambda: self.app.consumer, kafka.raw_topic, self.pipeline.positions,
            busy=lambda: self.pipeline.busy or not self.config.loaded.is_set(),
        )
        self._wire()

    def _state(self, name: str) -> FaustTableState:
        state = FaustTableState(state_table(self.app, name, self.settings.kafka.partitions))
        self._states.append(state)
        return state

    def _windows(self, name: str, size: int) -> TumblingWindows:
        """Tumbling windows of ``size`` seconds kept in their own table (and changelog)."""
        worker = self.settings.worker
        return TumblingWindows(
            self._state(name), size=size, lateness=worker.window_lateness, idle_close=worker.idle_close
        )

    def partitions(self) -> list[int]:
        """The raw topic's partitions assigned to this worker."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            return []
        return sorted(tp.partition for tp in assignment if tp.topic == self.raw.get_topic_name())

    async def _dead_letter(self, record: Record, reason: str) -> None:
        log.warning("record %s/%d@%d to the dead-letter topic: %s", record.topic, record.partition, record.offset, reason)
        headers = list(record.headers) + dead_letter_headers(reason, record.topic, record.partition, record.offset)
        await self.dlq.send(key=record.key, value=record.value, headers=headers)

    async def _flush_producer(self) -> None:
        """Make every state write so far durable, and recoverable on Tansu (FaustTableState.sync)."""
        await self.app.producer.flush()
        if sum(state.sync() for state in self._states):
            await self.app.producer.flush()

    def _wire(self) -> None:
        app, pipeline, worker = self.app, self.pipeline, self.settings.worker

        @app.task  # type: ignore[untyped-decorator]
        async def follow_config() -> None:
            await self.config.run()

        @app.task  # type: ignore[untyped-decorator]
        async def connect_clickhouse() -> None:
            # Connecting, migrating and clickhouse-connect's first-use imports take about a second:
            # done at start, not in the first batch.
            await self.clickhouse.warm_up()

        @app.agent(self.raw, name="ingest")
        async def ingest(stream: Any) -> None:
            await self.config.loaded.wait()  # routes and limits before the first record
            self.continuity.touch()
            async for events in stream.take_events(worker.batch_records, within=worker.batch_interval):
                records = [
                    Record(
                        m.topic, m.partition, m.offset, m.key, m.value, _headers(m),
                        round(m.timestamp * 1000) * 1_000_000 if m.timestamp else 0,
                    )
                    for m in (e.message for e in events)
                ]
                records = await self.continuity.admit(records)
                for step in steps(records, worker.batch_bytes):
                    await pipeline.handle(step, self.partitions())

        @app.timer(interval=worker.tick_interval)  # type: ignore[untyped-decorator]
        async def close_quiet_windows() -> None:
            if not (app.rebalancing or app.in_recovery):
                await self.continuity.watch(self.partitions())
                await pipeline.tick(self.partitions())

        @app.timer(interval=WORKER_FULL_COLLECTION_SECONDS)  # type: ignore[untyped-decorator]
        async def collect_cycles() -> None:
            gc.collect()

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
            pipeline.reload_windows()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
            pipeline.reload_windows()

        # mode's stub types receivers as returning Awaitable[None] | None; coroutines are fine.
        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def drain(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
            await self.reader.stop()  # running reads are cancelled, not waited for
            await pipeline.drain()
            await pipeline.tick(self.partitions(), force=True)
            await self.clickhouse.stop()
            for shard in self.shards:
                await shard.stop()

        owner = self

        @app.page("/status")
        class StatusView(View):
            async def get(self, request: Request) -> Response:
                return self.json(owner.status())

        @app.page("/metrics")
        class MetricsView(View):
            async def get(self, request: Request) -> Response:
                return self.text(render(owner.status(), key_labels=owner.settings.metrics_key_labels), content_type="text/plain; version=0.0.4")

        @app.page("/query")
        class QueryView(View):
            async def post(self, request: Request) -> Response:
                try:
                    body = await request.read()
                except HTTPRequestEntityTooLarge as exc:
                    status, answer = owner.query_api.refuse(Refused(413, "bad_request", exc.text or "body too large"))
                else:
                    status, answer = await owner.query_api.answer(request.headers, body)
                return self.bytes(
                    json.dumps(answer, default=str).encode(), content_type="application/json", status=status,
                    headers={"www-authenticate": "Bearer"} if status == 401 else None,
                )

        if worker.console:
            mount_console(self)

    def status(self) -> dict[str, Any]:
        """Counters of the pipeline and the state of this worker."""
        partitions = self.partitions()
        return {
            "partitions": partitions,
            "open_windows": self.pipeline.open_windows(partitions),
            "positions": {str(p): o for p, o in self.pipeline.positions.as_dict(partitions).items()},
            "seeks": self.continuity.seeks,
            "durable_records_skipped": self.continuity.skipped,
            "counters": self.pipeline.counters.as_dict() | self.query_api.counters(),
            # wall-clock times (epoch seconds) the consumer handed over the first and latest raw record
            "first_record_at": self.record_clock.first_at,
            "last_record_at": self.record_clock.last_at,
            "rows_written": dict(self.pipeline.clickhouse.rows_written),
            "file_lines_written": self.pipeline.files.lines_written,
            "file_rotations": self.pipeline.files.rotations,
            "clickhouse_retries": self.pipeline.clickhouse.retries,
            "throttle": self.pipeline.throttler.as_dict(),
            "late": dict(self.pipeline.late),
            "config": self.config.status(),
        }

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then drain the pipeline and stop."""
        kafka = self.settings.kafka
        ensure_topics_sync(
            kafka.bootstrap, [kafka.raw_topic, kafka.dlq_topic],
            partitions=kafka.partitions, replication_factor=kafka.replication_factor,
        )
        runner = faust.Worker(self.app, loglevel=self.settings.log_level, quiet=True)
        # At level warning or above the terminal spinner would set the root logger to DEBUG,
        # and every debug call of aiokafka (one per message) would build a record: a quarter
        # of the worker's CPU.
        runner.spinner = None
        runner.execute_from_commandline()
