"""What the worker does with a batch of raw records, independent of Faust.

``process`` decodes records and buffers their rows (files, ClickHouse) and metric points
(windows); ``commit`` makes the buffered rows and the closed windows durable and only then
drops those windows from the state. Jobs run one at a time
through :meth:`Pipeline.submit`, shielded from the caller's cancellation, so a stopping agent
never leaves a batch half written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sluice.crypto import Keyring
from sluice.records import decode_record
from sluice.shards import access_key_of
from sluice.keys.models import DEFAULT_ROUTES, AccessKeyConfig, Sink, Stream
from sluice.settings import EncryptionSettings
from sluice.streams import sketch
from sluice.streams.decode import EVENT_COLUMNS, LOG_COLUMNS, POINT_TIMESTAMP, SPAN_COLUMNS, Decoded
from sluice.streams.exceptions import DecodeError
from sluice.streams.positions import Positions
from sluice.streams.sinks.clickhouse import ClickHouseSink
from sluice.streams.sinks.files import FileSink
from sluice.streams.throttle import Throttler
from sluice.streams.windows import METRIC_COLUMNS, ClosedWindow, TumblingWindows, series_ids
from sluice.time_bounds import UNBOUNDED, TimeBounds

log = logging.getLogger(__name__)

# Columns of a log or event row that a file line carries, and the names it carries them by.
_BATCH_INDEX = LOG_COLUMNS.index("batch_index")
assert _BATCH_INDEX == EVENT_COLUMNS.index("batch_index")
_LINE_FIELDS = {
    "logs": tuple((c, LOG_COLUMNS.index(c)) for c in ("timestamp", "source_id", "instance_id", "type", "payload", "tags")),
    "events": tuple((c, EVENT_COLUMNS.index(c)) for c in ("timestamp", "source_id", "instance_id", "title", "body", "tags")),
    "spans": tuple(
        (c, SPAN_COLUMNS.index(c)) for c in SPAN_COLUMNS if c not in ("access_key", "kafka_partition", "kafka_offset", "batch_index")
    ),
}


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record of the raw topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ns: int = 0  # the record's Kafka timestamp; 0 if it has none


@dataclass
class Counters:
    """What the pipeline has done since it started; exported on the worker's status page."""

    records: int = 0
    steps: int = 0  # processing steps (Pipeline.handle): one or more per batch of the consumer
    envelopes: int = 0
    logs: int = 0
    events: int = 0
    spans: int = 0
    points: int = 0
    replayed_records_skipped: int = 0
    dead_letters: int = 0
    throttled: int = 0
    late: int = 0
    out_of_bounds: int = 0  # envelopes dropped by the decoder: a time out of bounds (sluice.time_bounds)
    windows_closed: int = 0
    metric_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def steps(records: Sequence[Record], max_bytes: int) -> list[Sequence[Record]]:
    """``records`` cut into as few runs as keep each within ``max_bytes`` of values, of about equal
    bytes (a record larger than that is a step of its own), in order: each is processed and made
    durable before the next."""
    total = sum(len(r.value) for r in records)
    if total <= max_bytes:
        return [records] if records else []
    target = total / -(-total // max_bytes)  # equal shares of the fewest steps that could hold it
    out: list[Sequence[Record]] = []
    start, size = 0, 0
    for i, record in enumerate(records):
        n = len(record.value)
        if i > start and (size + n > max_bytes or size >= target):
            out.append(records[start:i])
            start, size = i, 0
        size += n
    out.append(records[start:])
    return out


MetricStream = Literal["metrics_1s", "metrics_1m"]
DeadLetter = Callable[[Record, str], Awaitable[None]]
RouteLookup = Callable[[str], AccessKeyConfig | None]


@dataclass
class _Batch:
    """Rows of one processing batch waiting to be made durable."""

    logs: list[list[Any]] = field(default_factory=list)
    events: list[list[Any]] = field(default_factory=list)
    spans: list[list[Any]] = field(default_factory=list)
    positions: dict[int, tuple[int, int]] = field(default_factory=dict)
    dead: list[tuple[Record, str]] = field(default_factory=list)


def metric_line(table: MetricStream, row: list[Any]) -> dict[str, Any]:
    """A metric row (METRIC_COLUMNS) as a file line. Lines of one series and window are
    partials (shards, late corrections) that add up: counts and sums add, min/max take the
    extremes, ``last`` is the one with the newest ``last_timestamp``, sketches add per bucket."""
    _, name, sid, start, kind, unit, tags, count, total, low, high, (last_ts, last), sk = row
    line = {
        "window": table.removeprefix("metrics_"), "window_start": start, "name": name, "kind": kind,
        "unit": unit, "tags": tags, "series_id": sid, "count": count, "sum": total, "min": low,
        "max": high, "last": last, "last_timestamp": last_ts,
    }
    if sk:
        p50, p90, p99 = sketch.quantiles(sk, (0.5, 0.9, 0.99))
        line.update(p50=p50, p90=p90, p99=p99, sketch={str(b): n for b, n in sorted(sk.items())})
    return line


def _token(*parts: object) -> str:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).hexdigest()


class Pipeline:
    """Decode, aggregate and route raw records; see the module docstring for the order of things."""

    def __init__(
        self,
        windows: Mapping[MetricStream, TumblingWindows],
        files: FileSink,
        clickhouse: ClickHouseSink,
        *,
        dead_letter: DeadLetter,
        routes: RouteLookup = lambda key: None,
        flush_state: Callable[[], Awaitable[None]] | None = None,
        keyring: Keyring | None = None,
        positions: Positions | None = None,
        max_lateness: float = 0.0,
        bounds: TimeBounds | None = None,
    ) -> None:
        if not windows:
            raise ValueError("the pipeline needs at least one window size")
        self.windows = dict(windows)
        self.files = files
        self.clickhouse = clickhouse
        self.counters = Counters()
        self._dead_letter = dead_letter
        self._routes = routes
        self.throttler = Throttler(routes)
        self._max_late_ns = int(max_lateness * 1e9)
        # Times out of ``bounds`` are dropped by the decoder; metric points older than max_lateness
        # by _drop_late, counted per key as late.
        self._bounds = None if bounds is None else bounds.in_worker()
        self.late: dict[str, int] = {}  # metric points dropped as too late, per access key
        self._flush_state = flush_state
        self._keyring = keyring or Keyring(EncryptionSettings())
        self._batch = _Batch()
        # Per partition, the highest source offset whose outputs are durable.
        self.positions = positions or Positions()
        self._lock = asyncio.Lock()
        self._reload_windows = False
        self._inflight: set[asyncio.Task[None]] = set()

    # -- running jobs one at a time ----------------------------------------------------

    async def submit(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` after the jobs submitted before it; cancelling the caller does not stop it."""
        task = asyncio.ensure_future(self._serialized(job))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)

    async def _serialized(self, job: Callable[[], Awaitable[None]]) -> None:
        async with self._lock:
            if self._reload_windows:
                self._reload_windows = False
                for windows in self.windows.values():
                    windows.forget()
            await job()

    def reload_windows(self) -> None:
        """Have the next job read the open windows from their state again: call it whenever
        partitions move (the state of a partition taken over holds what its last owner wrote)."""
        self._reload_windows = True

    @property
    def busy(self) -> bool:
        """Whether a job is running or waiting."""
        return bool(self._inflight)

    async def drain(self) -> None:
        """Wait for every submitted job to finish."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def handle(self, records: Sequence[Record], partitions: Iterable[int]) -> None:
        """Process a batch of records, close due windows of ``partitions``, make it all durable."""

        partitions = list(partitions)

        async def job() -> None:
            self.counters.steps += 1
            self.process(records)
            await self.commit(partitions)

        await self.submit(job)

    async def tick(self, partitions: Iterable[int], *, force: bool = False) -> None:
        """Close the due windows of ``partitions`` (those of quiet partitions too) and store them;
        with ``force``, every open window (on shutdown: later points make a correction partial)."""
        partitions = list(partitions)

        async def job() -> None:
            await self.commit(partitions, force=force)

        await self.submit(job)

    def open_windows(self, partitions: Iterable[int]) -> dict[str, int]:
        """How many windows are open, per metrics table."""
        partitions = list(partitions)
        return {table: len(w.open_windows(partitions)) for table, w in self.windows.items()}

    # -- the steps ---------------------------------------------------------------------

    def _sinks(self, access_key: str, stream: Stream) -> list[Sink]:
        config = self._routes(access_key)
        return config.sinks_for(stream) if config is not None else DEFAULT_ROUTES[stream]

    def process(self, records: Iterable[Record]) -> None:
        """Decode records and buffer their rows and points (nothing is durable yet)."""
        batch, counters = self._batch, self.counters
        for record in records:
            counters.records += 1
            low, high = batch.positions.get(record.partition, (record.offset, record.offset))
            batch.positions[record.partition] = (min(low, record.offset), max(high, record.offset))
            access_key = access_key_of(record.key)
            try:
                window = UNBOUNDED if self._bounds is None else self._bounds.around(record.timestamp_ns or time.time_ns())
                decoded = decode_record(record, self._keyring, window)
            except DecodeError as exc:
                counters.dead_letters += 1
                batch.dead.append((record, str(exc)))
                continue
            counters.out_of_bounds += decoded.out_of_bounds
            counters.envelopes += len(decoded.logs) + len(decoded.events) + len(decoded.points) + len(decoded.spans)
            if decoded.logs or decoded.events:
                self._throttle(record, decoded)
            for stream, rows in (("logs", decoded.logs), ("events", decoded.events), ("spans", decoded.spans)):
                if not rows:
                    continue
                sinks = self._sinks(access_key, stream)  # type: ignore[arg-type]
                if "file" in sinks:
                    self.files.add(access_key, stream, record.partition, record.offset, rows, _LINE_FIELDS[stream])
                if "clickhouse" in sinks:
                    getattr(batch, stream).extend(rows)
            counters.logs += len(decoded.logs)
            counters.events += len(decoded.events)
            counters.spans += len(decoded.spans)
            if decoded.points and self._max_late_ns:
                self._drop_late(record, access_key, decoded)
            if decoded.points:
                applied = skipped = False
                sids = series_ids(access_key, decoded.points)  # once for every window size
                for table, windows in self.windows.items():
                    if self._sinks(access_key, table):
                        if windows.add(record.partition, record.offset, access_key, decoded.points, sids):
                            applied = True
                        else:
                            skipped = True
                counters.points += len(decoded.points) if applied else 0
                counters.replayed_records_skipped += 1 if skipped and not applied else 0

    def _route_window(self, table: MetricStream, window: ClosedWindow) -> tuple[list[list[Any]], dict[str, list[dict[str, Any]]]]:
        """A closed window's rows for ClickHouse, and its file lines per access key, by the
        routes in force when it is stored."""
        to_clickhouse: list[list[Any]] = []
        to_files: dict[str, list[dict[str, Any]]] = {}
        by_key: dict[str, list[Sink]] = {}
        for row in window.rows:
            sinks = by_key.get(row[0])
            if sinks is None:
                sinks = by_key[row[0]] = self._sinks(row[0], table)
            if "clickhouse" in sinks:
                to_clickhouse.append(row)
            if "file" in sinks:
                to_files.setdefault(row[0], []).append(metric_line(table, row))
        return to_clickhouse, to_files

    def _drop_late(self, record: Record, access_key: str, decoded: Decoded) -> None:
        """Drop the points older than ``max_lateness`` when the gateway took them.

        Judged against the record's Kafka time, not the wall clock, so a replay after an outage
        drops exactly what the first pass dropped and nothing more.
        """
        cutoff = (record.timestamp_ns or time.time_ns()) - self._max_late_ns
        kept = [p for p in decoded.points if p[POINT_TIMESTAMP] >= cutoff]
        if len(kept) < len(decoded.points):
            late = len(decoded.points) - len(kept)
            self.counters.late += late
            self.late[access_key] = self.late.get(access_key, 0) + late
            decoded.points = kept

    def _throttle(self, record: Record, decoded: Decoded) -> None:
        """Drop the logs and events over the key's limit, judged in the batch's order."""
        at_ns = record.timestamp_ns or time.time_ns()
        n = len(decoded.logs) + len(decoded.events)
        mask = self.throttler.admit((record.key or b"").decode("utf-8", "replace"), at_ns, n)
        if all(mask):
            return
        rows = sorted(
            [(r[_BATCH_INDEX], True, r) for r in decoded.logs] + [(r[_BATCH_INDEX], False, r) for r in decoded.events],
            key=lambda x: x[0],
        )
        self.counters.throttled += mask.count(False)
        decoded.logs = [r for (_, is_log, r), keep in zip(rows, mask) if keep and is_log]
        decoded.events = [r for (_, is_log, r), keep in zip(rows, mask) if keep and not is_log]

    async def commit(self, partitions: Sequence[int], *, force: bool = False) -> None:
        """Make everything buffered durable, and close and store the due windows (all with
        ``force``) of ``partitions``.

        Closed windows go to the state's outbox, which is made durable (with the points applied
        so far) before any ClickHouse insert; each emission group of the outbox (the windows of
        a partition staged together) is then a block of its own, named by (table, partition,
        group): one stored again after a crash carries the same token and is kept once.
        """
        batch, self._batch = self._batch, _Batch()
        for record, reason in batch.dead:
            await self._dead_letter(record, reason)
        for windows in self.windows.values():
            windows.stage_all(windows.close(partitions, force=force))
        await asyncio.to_thread(self.files.flush)
        if self._flush_state is not None:
            await self._flush_state()
        where = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(batch.positions.items()))
        self.clickhouse.add("logs", LOG_COLUMNS, batch.logs, _token("logs", where))
        self.clickhouse.add("events", EVENT_COLUMNS, batch.events, _token("events", where))
        self.clickhouse.add("spans", SPAN_COLUMNS, batch.spans, _token("spans", where))
        staged = [(table, w) for table, windows in self.windows.items() for w in windows.outbox(partitions)]
        lines = 0
        groups: dict[tuple[str, int, int], list[list[Any]]] = {}  # one block per emission group
        for table, window in staged:
            to_clickhouse, to_files = self._route_window(table, window)
            if to_clickhouse:
                groups.setdefault((table, window.partition, window.group), []).extend(to_clickhouse)
            for access_key, rows in to_files.items():
                lines += self.files.add(access_key, table, window.partition, window.seq, rows)
        for (name, partition, group), block in groups.items():
            self.clickhouse.add(name, METRIC_COLUMNS, block, _token(name, partition, "group", group))
        if lines:
            await asyncio.to_thread(self.files.flush)
        await self.clickhouse.flush()
        for table, window in staged:
            self.windows[table].done(window)  # made durable by the next flush; a replay is deduplicated
            self.counters.windows_closed += 1
            self.counters.metric_rows += len(window.rows)
        for partition, (_, high) in batch.positions.items():
            self.positions.advance(partition, high)  # in the state: durable with the next flush
