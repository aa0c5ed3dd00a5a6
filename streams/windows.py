"""Tumbling-window aggregation of metric points, closed on a per-partition clock.

State lives in a :class:`WindowState` backend (a Faust table in the worker, a dict in unit
tests) keyed ``"<partition>|<window start s>|<series id>"`` with values
``[access_key, name, kind, unit, tags, count, sum, min, max, last_ts, last, sketch, offset]``
(``sketch``: timers' :mod:`~sluice.streams.sketch` of durations, empty for other kinds;
``offset``: the last source offset applied to this value). A batch of points is pre-aggregated
before the state is touched, so the state sees one update per series and window per record.

Replays never double count: a record at or below the partition's applied offset
(``"<partition>|@applied"``) is skipped, and so is its update of a value whose own offset is
not older (a crash may have persisted some of a record's writes but not the marker); until
such a record has been read again, no window of its partition closes.
Closing a window moves its rows into the window's outbox entry (``"<partition>|@out|<start>"``,
a list of ``[offset, rows]`` emissions) in the same state; the caller makes that durable, stores
each emission under a name made of (partition, start, offset), then calls :meth:`done`. After a
crash an emission is stored again under the same name, which ClickHouse deduplicates; values a
crash left behind while they were being staged are recognised by their offset and ignored.

A partition's clock is the later of the newest envelope timestamp seen on it and the wall
clock minus ``idle_close``: windows of a quiet partition still close. A window closes once the
clock passes its end plus ``lateness``; points for an already closed window open it again and
are emitted as a correction partial that ClickHouse merges into the row written before.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sluice.streams import sketch
from sluice.streams.decode import TIMER, MetricPoint

NS = 1_000_000_000
METRIC_COLUMNS = (
    "access_key", "name", "series_id", "window_start", "kind", "unit", "tags",
    "count", "sum", "min", "max", "last", "sketch",
)
APPLIED = "@applied"
OUTBOX = "@out"
# Positions in a state value.
_COUNT, _SUM, _MIN, _MAX, _LAST_TS, _LAST, _SKETCH, _OFFSET = 5, 6, 7, 8, 9, 10, 11, 12


def series_id(access_key: str, name: str, tags: dict[str, str]) -> int:
    """A stable 64-bit id of a series: access key + metric name + sorted tags."""
    h = hashlib.blake2b(digest_size=8)
    h.update(access_key.encode())
    h.update(b"\0")
    h.update(name.encode())
    for k in sorted(tags):
        h.update(b"\0")
        h.update(k.encode())
        h.update(b"=")
        h.update(tags[k].encode())
    return int.from_bytes(h.digest(), "big")


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """One closed window of one partition: its rows and the state keys that held them.

    ``offset`` is the newest source offset in its values: with the partition and start it
    names this emission (a later correction of the same window has a newer one).
    """

    partition: int
    start: int
    offset: int
    keys: list[str]
    rows: list[list[Any]]

    @property
    def outbox_key(self) -> str:
        return outbox_key(self.partition, self.start)


def outbox_key(partition: int, start: int) -> str:
    """The state key of a window's outbox entry: a list of ``[offset, rows]`` emissions."""
    return f"{partition}|{OUTBOX}|{start}"


def _row_from_state(row: list[Any]) -> list[Any]:
    """A row as stored in the state, with the types JSON (the changelog) does not keep."""
    row = list(row)
    row[11] = tuple(row[11])
    row[12] = sketch.normalized(row[12])
    return row


class WindowState(Protocol):
    """Where open windows are kept; every write is durable (changelog) in the worker."""

    def get(self, key: str) -> list[Any] | None: ...

    def put(self, partition: int, key: str, value: list[Any]) -> None: ...

    def delete(self, partition: int, key: str) -> None: ...

    def keys(self) -> Iterable[str]: ...


def _merge_value(into: list[Any], other: list[Any]) -> None:
    into[_COUNT] += other[_COUNT]
    into[_SUM] += other[_SUM]
    into[_MIN] = min(into[_MIN], other[_MIN])
    into[_MAX] = max(into[_MAX], other[_MAX])
    if other[_LAST_TS] >= into[_LAST_TS]:
        into[_LAST_TS], into[_LAST] = other[_LAST_TS], other[_LAST]
    into[_SKETCH] = sketch.merge(sketch.normalized(into[_SKETCH]), other[_SKETCH])


class TumblingWindows:
    """Open windows of one size over the partitions of one worker.

    The state is the only index: closing scans its keys, so what a worker owns after recovery
    or a rebalance needs no rebuilding.
    """

    def __init__(
        self, state: WindowState, *, size: float, lateness: float, idle_close: float
    ) -> None:
        if size < 1 or size != int(size):
            raise ValueError(f"window size must be a whole number of seconds >= 1, got {size}")
        if lateness < 0 or idle_close < 0:
            raise ValueError("lateness and idle_close must be >= 0")
        self.state = state
        self.size_s = int(size)
        self.lateness_ns = int(lateness * NS)
        self.idle_close_ns = int(idle_close * NS)
        self._newest: dict[int, int] = defaultdict(int)

    # -- applying points ---------------------------------------------------------------

    @staticmethod
    def _applied_key(partition: int) -> str:
        return f"{partition}|{APPLIED}"

    def applied_offset(self, partition: int) -> int:
        """The highest source offset already applied on this partition (-1 if none)."""
        value = self.state.get(self._applied_key(partition))
        return int(value[0]) if value else -1

    def add(self, partition: int, offset: int, access_key: str, points: list[MetricPoint]) -> bool:
        """Apply one record's points; False (and nothing changes) if the offset was applied.

        The caller must make the state durable before it acknowledges the record."""
        if offset <= self.applied_offset(partition):
            return False
        size_ns = self.size_s * NS
        pre: dict[tuple[int, int], list[Any]] = {}
        newest = self._newest[partition]
        for p in points:
            ts = p.timestamp
            if ts > newest:
                newest = ts
            start = ts // size_ns * self.size_s
            sid = series_id(access_key, p.name, p.tags)
            agg = pre.get((start, sid))
            v = p.value
            if agg is None:
                agg = pre[(start, sid)] = [
                    access_key, p.name, p.kind, p.unit, p.tags, 1, v, v, v, ts, p.last, {}, offset
                ]
            else:
                agg[_COUNT] += 1
                agg[_SUM] += v
                if v < agg[_MIN]:
                    agg[_MIN] = v
                if v > agg[_MAX]:
                    agg[_MAX] = v
                if ts >= agg[_LAST_TS]:
                    agg[_LAST_TS], agg[_LAST] = ts, p.last
            if p.kind == TIMER:
                sketch.add(agg[_SKETCH], v)
        self._newest[partition] = newest
        covered: dict[int, int] = {}
        for (start, sid), agg in pre.items():
            key = f"{partition}|{start}|{sid}"
            old = self.state.get(key)
            if old is not None:
                if start not in covered:
                    covered[start] = self._covered(partition, start)
                if old[_OFFSET] <= covered[start]:
                    old = None  # left over from a crash while its window was staged
            if old is not None:
                if old[_OFFSET] >= offset:
                    continue  # written before a crash that lost the applied marker
                _merge_value(old, agg)
                old[_OFFSET] = offset
                agg = old
            self.state.put(partition, key, agg)
        self.state.put(partition, self._applied_key(partition), [offset])
        return True

    # -- closing -----------------------------------------------------------------------

    def clock(self, partition: int, now_ns: int | None = None) -> int:
        """The partition's event-time clock in ns."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        return max(self._newest[partition], now_ns - self.idle_close_ns)

    def open_windows(self, partitions: Iterable[int]) -> dict[tuple[int, int], list[str]]:
        """State keys of the open windows of ``partitions``, by (partition, window start)."""
        wanted = {str(p) for p in partitions}
        found: dict[tuple[int, int], list[str]] = defaultdict(list)
        for key in self.state.keys():
            parts = key.split("|")
            if len(parts) == 3 and parts[0] in wanted and not parts[1].startswith("@"):
                found[(int(parts[0]), int(parts[1]))].append(key)
        return found

    def close(
        self, partitions: Iterable[int], now_ns: int | None = None, *, force: bool = False
    ) -> list[ClosedWindow]:
        """Windows of ``partitions`` whose end plus lateness their clock has passed (all with ``force``).

        Rows are in METRIC_COLUMNS order. Nothing changes until :meth:`stage`.
        """
        staged = self._staged(partitions)
        windows: dict[tuple[int, int], list[tuple[str, list[Any]]]] = {}
        newest_value: dict[int, int] = defaultdict(lambda: -1)
        for (partition, start), keys in sorted(self.open_windows(partitions).items()):
            values = [(k, v) for k in sorted(keys) if (v := self.state.get(k)) is not None]
            windows[(partition, start)] = values
            newest_value[partition] = max([newest_value[partition]] + [v[_OFFSET] for _, v in values])
        closed = []
        clocks: dict[int, int] = {}
        for (partition, start), values in windows.items():
            if newest_value[partition] > self.applied_offset(partition):
                # A crash kept some writes of a record but not its marker: the record is read
                # again and completes these windows before any of them may close.
                continue
            if partition not in clocks:
                clocks[partition] = self.clock(partition, now_ns) - self.lateness_ns
            if not force and (start + self.size_s) * NS > clocks[partition]:
                continue
            rows, newest = [], -1
            covered = staged.get((partition, start), -1)
            for key, v in values:
                if v[_OFFSET] <= covered:
                    continue  # left over from a crash while it was being staged: in the outbox
                sid = int(key.rsplit("|", 1)[1])
                rows.append([
                    v[0], v[1], sid, start, v[2], v[3], v[4],
                    v[_COUNT], v[_SUM], v[_MIN], v[_MAX], (v[_LAST_TS], v[_LAST]),
                    sketch.normalized(v[_SKETCH]),
                ])
                newest = max(newest, v[_OFFSET])
            closed.append(ClosedWindow(partition, start, newest, [k for k, _ in values], rows))
        return closed

    def _staged(self, partitions: Iterable[int]) -> dict[tuple[int, int], int]:
        """Per (partition, start) with outbox entries, the newest offset they cover."""
        return {(w.partition, w.start): w.offset for w in self.outbox(partitions)}

    def _covered(self, partition: int, start: int) -> int:
        entry = self.state.get(outbox_key(partition, start))
        return max((int(offset) for offset, _ in entry), default=-1) if entry else -1

    def stage(self, window: ClosedWindow) -> None:
        """Move a closed window's rows into its outbox entry. The entry is written before the
        values are deleted: values a crash leaves behind are not newer than the entry, and
        :meth:`close` and :meth:`add` treat them as gone."""
        if window.rows:
            entry = [e for e in self.state.get(window.outbox_key) or [] if int(e[0]) != window.offset]
            self.state.put(window.partition, window.outbox_key, entry + [[window.offset, window.rows]])
        for key in window.keys:
            self.state.delete(window.partition, key)

    def outbox(self, partitions: Iterable[int]) -> list[ClosedWindow]:
        """The staged windows of ``partitions`` not stored yet, oldest first."""
        wanted = {str(p) for p in partitions}
        found = []
        for key in self.state.keys():
            parts = key.split("|")
            if len(parts) == 3 and parts[1] == OUTBOX and parts[0] in wanted:
                for offset, rows in self.state.get(key) or []:
                    rows = [_row_from_state(r) for r in rows]
                    found.append(ClosedWindow(int(parts[0]), int(parts[2]), int(offset), [], rows))
        return sorted(found, key=lambda w: (w.partition, w.start, w.offset))

    def done(self, window: ClosedWindow) -> None:
        """Drop a stored emission from its outbox entry."""
        entry = [e for e in self.state.get(window.outbox_key) or [] if int(e[0]) != window.offset]
        if entry:
            self.state.put(window.partition, window.outbox_key, entry)
        else:
            self.state.delete(window.partition, window.outbox_key)
