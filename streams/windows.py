"""Tumbling-window aggregation of metric points, closed on a per-partition clock.

Open windows live in memory, per partition and window start, as ``{series id: value}`` with
values ``[access_key, name, kind, unit, tags, count, sum, min, max, last_ts, last, sketch]``
(``sketch``: timers' :mod:`~sluice.streams.sketch` of durations, empty for other kinds).
What makes them durable is a :class:`WindowState` (a Faust table in the worker, a dict in unit
tests), written once per batch in :meth:`TumblingWindows.flush`, not once per point. Every
entry holding rows is split into chunks of at most ``CHUNK_ROWS`` rows (a changelog message
has a size limit), each carrying the number of chunks: an entry a crash left incomplete is
treated as never written.

- ``"<p>|<start>|@d|<offset>|<i>"``: a *delta*, the batch's aggregate of one window, as rows
  ``[series id, *value]``; ``offset`` is the newest record of the partition in the batch;
- ``"<p>|<start>|@s|<offset>|<i>"``: a *snapshot*, the whole window up to ``offset``; it
  replaces the window's deltas when they hold more rows than the window itself (one-minute
  windows collect a delta per batch), so the state stays within about three times the open
  windows;
- ``"<p>|@applied"``: the offset up to which every record's points are in the state, written
  after the deltas and the emissions that hold them;
- ``"<p>|@out|<start>|<offset>|<i>"``: an emission of a closed window waiting to be stored,
  ``[seq, group, chunks, rows]``; ``seq`` numbers the partition's emissions in the order they
  were staged (the file sink writes each once by that number); ``group`` is the ``seq`` of the
  first emission staged with it (:meth:`TumblingWindows.stage_all`): a group is stored as one
  block, named by it (entries without a group, ``[seq, chunks, rows]``, are groups of one);
- ``"<p>|@seq"``: the number of the partition's last emission.

Replays never double count: a record at or below the applied offset is skipped, and a point
whose window already holds a delta or emission of that offset or later is skipped too (a
crash may have persisted some of a batch's deltas but not the marker); until such records
have been read again, no window of their partition closes.
Closing a window moves its rows into an outbox entry in the same state. Points of the batch
that closes a window go to no delta: the emission is their first durable copy, and the
partition's marker is written after it (a catching-up worker closes most windows in the batch
that filled them, and would write each row twice). The caller makes that durable, stores each
group of emissions under a name made of (partition, group), then calls
:meth:`TumblingWindows.done`. After a crash a group is stored again under the same name, which
ClickHouse deduplicates (what a crash left of a group after some of its emissions were done
was stored whole before); deltas a crash left behind while their window was being staged are
not newer than the emission, and are ignored.

Memory is the index: a partition's windows are read from the state the first time it is
used and after :meth:`TumblingWindows.forget` (which the worker calls on every rebalance).

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
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sluice.streams import _aggregate, sketch
from sluice.streams.decode import TIMER, MetricPoint

NS = 1_000_000_000
METRIC_COLUMNS = (
    "access_key", "name", "series_id", "window_start", "kind", "unit", "tags",
    "count", "sum", "min", "max", "last", "sketch",
)
APPLIED = "@applied"
OUTBOX = "@out"
SEQ = "@seq"
CHUNK_ROWS = 1000
CHUNK_BYTES = 256 * 1024  # about; a changelog message is limited to producer_max_request_size
# Rows of a partition's emission group: each group is one ClickHouse insert, and an insert has a
# fixed cost of several milliseconds (a part, its deduplication entry) whatever its size.
GROUP_ROWS = 100_000
DELTA = "@d"
SNAPSHOT = "@s"
# Positions in a value.
_COUNT, _SUM, _MIN, _MAX, _LAST_TS, _LAST, _SKETCH = 5, 6, 7, 8, 9, 10, 11


# The series ids worked out so far, by an in-process hash of (access key, name, tags): see
# _aggregate.series_ids.
_SERIES_IDS: dict[int, tuple[Any, ...]] = {}
_SERIES_IDS_MAX = 250_000  # about 60 MiB at most
# By series id: about what one of its rows adds to a state chunk (the size of its tags, which a
# series id stands for, and room for the rest); chunks are cut by it.
_ROW_BYTES: dict[int, int] = {}


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


def series_ids(access_key: str, points: list[MetricPoint]) -> list[int]:
    """The :func:`series_id` of each point, remembered for the series seen before (it runs per point)."""
    return _aggregate.series_ids(access_key, points, _SERIES_IDS, _SERIES_IDS_MAX, series_id)


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """One closed window of one partition: its rows and the state keys that held them.

    ``offset`` is the newest source offset in its values: with the partition and start it
    names this emission (a later correction of the same window has a newer one). ``seq``
    numbers the partition's emissions in the order they were staged (-1 until then);
    ``group`` is the ``seq`` of the first emission of its group.
    """

    partition: int
    start: int
    offset: int
    keys: list[str]
    rows: list[list[Any]]
    seq: int = -1
    group: int = -1


def _row_from_state(row: list[Any]) -> list[Any]:
    """A row as stored in the state, with the types JSON (the changelog) does not keep."""
    row = list(row)
    row[11] = tuple(row[11])
    row[12] = sketch.normalized(row[12])
    return row


class WindowState(Protocol):
    """Where windows are made durable (a changelog in the worker)."""

    def get(self, key: str) -> list[Any] | None: ...

    def put(self, partition: int, key: str, value: list[Any]) -> None: ...

    def delete(self, partition: int, key: str) -> None: ...

    def keys(self) -> Iterable[str]: ...


def _merge_value(into: list[Any], other: list[Any]) -> None:
    into[_COUNT] += other[_COUNT]
    into[_SUM] += other[_SUM]
    if other[_MIN] < into[_MIN]:
        into[_MIN] = other[_MIN]
    if other[_MAX] > into[_MAX]:
        into[_MAX] = other[_MAX]
    if other[_LAST_TS] >= into[_LAST_TS]:
        into[_LAST_TS], into[_LAST] = other[_LAST_TS], other[_LAST]
    if other[_SKETCH]:
        into[_SKETCH] = sketch.merge(sketch.normalized(into[_SKETCH]), other[_SKETCH])


def _copy(value: list[Any]) -> list[Any]:
    """A value that shares nothing mutable with ``value`` (tags are never changed)."""
    copy = list(value)
    if copy[_SKETCH]:
        copy[_SKETCH] = dict(copy[_SKETCH])
    return copy


@dataclass
class _Window:
    """One open window of one partition."""

    values: dict[int, list[Any]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # the chunks of its deltas and snapshot
    covered: int = -1  # the newest offset whose points are in the state (deltas or outbox)
    delta_rows: int = 0  # rows in its deltas since its last snapshot
    unwritten: bool = False  # closing: its newest points go to the outbox, never to a delta


@dataclass
class _Partition:
    """What is known of one partition: its open windows, outbox starts and marker."""

    applied: int = -1  # in the state
    marker_due: int = -1  # a flushed offset whose marker waits for closing windows to be staged
    seq: int = -1  # the last emission's number
    pending_offset: int = -1  # the newest record added since the last flush
    half_applied: int = -1  # the newest delta found when loading (a crash may have cut a flush)
    windows: dict[int, _Window] = field(default_factory=dict)
    outboxes: dict[tuple[int, int], list[str]] = field(default_factory=dict)  # (start, offset) -> chunks
    staged: dict[tuple[int, int], ClosedWindow] = field(default_factory=dict)  # the outbox's emissions staged here
    # Emissions stored but kept in the state until the marker covers them: their entry is what
    # tells a replay that their points are applied.
    stored: set[tuple[int, int]] = field(default_factory=set)
    pending: dict[int, dict[int, list[Any]]] = field(default_factory=dict)  # start -> sid -> value


class TumblingWindows:
    """Open windows of one size over the partitions of one worker."""

    def __init__(self, state: WindowState, *, size: float, lateness: float, idle_close: float) -> None:
        if size < 1 or size != int(size):
            raise ValueError(f"window size must be a whole number of seconds >= 1, got {size}")
        if lateness < 0 or idle_close < 0:
            raise ValueError("lateness and idle_close must be >= 0")
        self.state = state
        self.size_s = int(size)
        self.lateness_ns = int(lateness * NS)
        self.idle_close_ns = int(idle_close * NS)
        self._newest: dict[int, int] = defaultdict(int)
        self._partitions: dict[int, _Partition] = {}

    # -- memory and state --------------------------------------------------------------

    def forget(self) -> None:
        """Drop what memory holds; partitions are read from the state again when next used.
        Call it between batches whenever the state may have changed under it (a rebalance).
        Points not flushed yet (a batch whose commit failed) go too: their records were not
        made durable, so they are read again."""
        self._partitions.clear()

    def _partition(self, partition: int) -> _Partition:
        found = self._partitions.get(partition)
        if found is None:
            found = self._partitions[partition] = self._load(partition)
        return found

    def _load(self, partition: int) -> _Partition:
        """Read one partition's windows back from the state."""
        p = _Partition()
        prefix = f"{partition}|"
        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)  # an entry's chunks
        for key in self.state.keys():
            if not key.startswith(prefix):
                continue
            parts = key.split("|")
            if len(parts) == 2 and parts[1] in (APPLIED, SEQ):
                value = self.state.get(key)
                number = int(value[0]) if value else -1
                if parts[1] == APPLIED:
                    p.applied = number
                else:
                    p.seq = number
            elif len(parts) == 5:
                groups[tuple(parts[1:4])].append(key)
        entries: dict[int, list[tuple[int, str, list[str]]]] = defaultdict(list)
        for (a, b, c), keys in groups.items():
            values = [self.state.get(k) or [] for k in keys]
            if not all(len(v) >= 2 and int(v[-2]) == len(keys) for v in values):
                for key in keys:  # cut by a crash while it was written: never complete
                    self.state.delete(partition, key)
            elif a == OUTBOX:
                p.outboxes[(int(b), int(c))] = sorted(keys, key=_chunk_number)
                # a crash may have cut the flush between an emission and the @seq written after it
                p.seq = max(p.seq, int(values[0][0]))
            elif b in (DELTA, SNAPSHOT):
                entries[int(a)].append((int(c), b, sorted(keys, key=_chunk_number)))
        for start, found in entries.items():
            emitted = self._emitted(p, start)
            snapshot = max((o for o, kind, _ in found if kind == SNAPSHOT and o > emitted), default=-1)
            live = sorted(
                (o, keys) for o, kind, keys in found
                if o > max(emitted, snapshot) or (kind == SNAPSHOT and o == snapshot)
            )
            for o, kind, keys in found:
                if o <= max(emitted, snapshot) and not (kind == SNAPSHOT and o == snapshot):
                    for key in keys:  # left by a crash while staging or compacting: covered by what is newer
                        self.state.delete(partition, key)
            if not live:
                continue
            window = p.windows[start] = _Window()
            for offset, keys in live:
                window.keys += keys
                for key in keys:
                    for row in (self.state.get(key) or [[]])[-1]:
                        value = list(row[1:])
                        value[_LAST] = float(value[_LAST])
                        value[_SKETCH] = sketch.normalized(value[_SKETCH])
                        old = window.values.get(row[0])
                        if old is None:
                            window.values[row[0]] = value
                        else:
                            _merge_value(old, value)
                        window.delta_rows += 1
                window.covered = offset
                p.half_applied = max(p.half_applied, offset)
        return p

    @classmethod
    def _covered(cls, p: _Partition, start: int) -> int:
        """The newest offset whose points of the window at ``start`` the state holds (deltas,
        snapshot or emissions; -1 if none)."""
        window = p.windows.get(start)
        covered = window.covered if window is not None else -1
        return max(covered, cls._emitted(p, start)) if p.outboxes else covered

    @staticmethod
    def _emitted(p: _Partition, start: int) -> int:
        """The newest offset of a window's emissions waiting in the outbox (-1 if none)."""
        return max((o for s, o in p.outboxes if s == start), default=-1) if p.outboxes else -1

    def _put_chunked(
        self, partition: int, prefix: str, head: list[Any], rows: list[list[Any]], *, sid_at: int = 0, tags_at: int = 5
    ) -> list[str]:
        """Write ``rows`` (their series id at ``sid_at``, tags at ``tags_at``) as the chunks
        ``<prefix>|<i>`` = ``[*head, chunks, rows]``; their keys."""
        chunks: list[list[list[Any]]] = [[]]
        size = 0
        sizes = _ROW_BYTES
        for row in rows:
            row_size = sizes.get(row[sid_at])
            if row_size is None:
                tags = row[tags_at]
                if len(sizes) >= _SERIES_IDS_MAX:
                    sizes.clear()
                row_size = sizes[row[sid_at]] = 300 + sum(map(len, tags)) + sum(map(len, tags.values())) + 6 * len(tags)
            if chunks[-1] and (len(chunks[-1]) >= CHUNK_ROWS or size + row_size > CHUNK_BYTES):
                chunks.append([])
                size = 0
            chunks[-1].append(row)
            size += row_size
        keys = []
        for i, chunk in enumerate(chunks):
            key = f"{prefix}|{i}"
            self.state.put(partition, key, [*head, len(chunks), chunk])
            keys.append(key)
        return keys

    # -- applying points ---------------------------------------------------------------

    def add(
        self, partition: int, offset: int, access_key: str, points: list[MetricPoint], sids: list[int] | None = None
    ) -> bool:
        """Apply one record's points (``sids``: their :func:`series_ids`, worked out once for all
        window sizes); False (and nothing changes) if the offset was applied.

        The points are durable once :meth:`flush` has run and the state is flushed."""
        p = self._partition(partition)
        if offset <= max(p.applied, p.pending_offset):
            return False
        p.pending_offset = offset
        if sids is None:
            sids = series_ids(access_key, points)
        covered = self._covered
        pending = p.pending

        def resolve(start: int) -> dict[int, list[Any]] | None:
            """The aggregates of the window at ``start`` (None: the state has this record's points of it)."""
            return None if offset <= covered(p, start) else pending.setdefault(start, {})

        newest = _aggregate.aggregate(
            points, sids, access_key, self.size_s, self._newest[partition], resolve, TIMER, sketch.add
        )
        self._newest[partition] = newest
        return True

    def flush(self, closing: dict[int, int | None] | None = None) -> None:
        """Write what was added since the last flush to the state: a delta per window touched
        (or a snapshot, when the window's deltas outgrow it), then each partition's marker.

        ``closing``: per partition, the end (ns) by which its windows close now, None for all of
        them. Those windows take their new points in memory only: they are written once, as
        their outbox entry (:meth:`stage`), and the partition's marker waits for that.
        """
        closing = closing or {}
        for partition, p in self._partitions.items():
            if p.marker_due > p.applied:  # only then can a closed window be left unstaged
                for start, left in p.windows.items():
                    if left.unwritten:  # closed earlier but never staged: write it after all
                        self._snapshot(partition, start, left, left.covered)
                        left.unwritten = False
            if p.pending_offset <= p.applied:
                self._settle(partition, p)
                continue
            offset = p.pending_offset
            for start, pending in p.pending.items():
                window = p.windows.get(start)
                if window is None:
                    window = p.windows[start] = _Window()
                closes = partition in closing and self._due(start, closing[partition])
                # The delta is copied before its values join the window's, which go on changing.
                delta = [] if closes else [[sid, *_copy(value)] for sid, value in pending.items()]
                if not window.values:  # a new window takes the batch's values as they are
                    window.values = pending
                else:
                    for sid, value in pending.items():
                        old = window.values.get(sid)
                        if old is None:
                            window.values[sid] = value
                        else:
                            _merge_value(old, value)
                window.covered = offset
                if closes:
                    window.unwritten = True
                    continue
                window.delta_rows += len(delta)
                if window.delta_rows > max(2 * len(window.values), 64):
                    self._snapshot(partition, start, window, offset)
                else:
                    window.keys += self._put_chunked(partition, f"{partition}|{start}|{DELTA}|{offset}", [], delta)
            p.pending.clear()
            p.marker_due = offset
            self._settle(partition, p)

    def _settle(self, partition: int, p: _Partition) -> None:
        """Write the partition's marker, once no closing window holds points the state lacks."""
        if p.marker_due > p.applied and not any(w.unwritten for w in p.windows.values()):
            self.state.put(partition, f"{partition}|{APPLIED}", [p.marker_due])
            p.applied = p.marker_due
            for name in [n for n in p.stored if n[1] <= p.applied]:
                p.stored.discard(name)
                for key in p.outboxes.pop(name, []):
                    self.state.delete(partition, key)

    def _snapshot(self, partition: int, start: int, window: _Window, offset: int) -> None:
        """Replace a window's deltas by one value of the whole window (written first: a crash
        between the two leaves deltas that the snapshot's offset marks as covered)."""
        rows = [[sid, *_copy(value)] for sid, value in window.values.items()]
        keys = self._put_chunked(partition, f"{partition}|{start}|{SNAPSHOT}|{offset}", [], rows)
        for old in window.keys:
            self.state.delete(partition, old)
        window.keys = keys
        window.delta_rows = len(window.values)

    # -- closing -----------------------------------------------------------------------

    def clock(self, partition: int, now_ns: int | None = None) -> int:
        """The partition's event-time clock in ns."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        return max(self._newest[partition], now_ns - self.idle_close_ns)

    def open_windows(self, partitions: Iterable[int]) -> dict[tuple[int, int], int]:
        """Series per open window of ``partitions`` known in memory, by (partition, start)."""
        found = {}
        for partition in partitions:
            p = self._partitions.get(partition)
            if p is not None:
                starts = set(p.windows) | set(p.pending)
                for start in starts:
                    window = p.windows.get(start)
                    found[(partition, start)] = len(window.values) if window else len(p.pending[start])
        return found

    def close(self, partitions: Iterable[int], now_ns: int | None = None, *, force: bool = False) -> list[ClosedWindow]:
        """Windows of ``partitions`` whose end plus lateness their clock has passed (all with
        ``force``), after a :meth:`flush`. Rows are in METRIC_COLUMNS order. They leave the open
        windows with :meth:`stage` (:meth:`stage_all`), which makes their newest points durable:
        the flush kept them out of the deltas."""
        cutoffs: dict[int, int | None] = {}
        for partition in sorted(partitions):
            p = self._partition(partition)
            if p.half_applied > max(p.applied, p.pending_offset):
                # A crash cut a flush: its records are read again and complete the windows
                # before any of them may close.
                continue
            cutoffs[partition] = None if force else self.clock(partition, now_ns) - self.lateness_ns
        self.flush(cutoffs)
        closed = []
        for partition, cutoff in cutoffs.items():
            p = self._partition(partition)
            for start in sorted(p.windows):
                if not self._due(start, cutoff):
                    continue
                window = p.windows[start]
                rows = _aggregate.window_rows(window.values, start)  # by series id
                closed.append(ClosedWindow(partition, start, window.covered, list(window.keys), rows))
        return closed

    def _due(self, start: int, cutoff: int | None) -> bool:
        """Whether the window at ``start`` closes by ``cutoff`` (ns; None: every window does)."""
        return cutoff is None or (start + self.size_s) * NS <= cutoff

    def stage_all(self, windows: Iterable[ClosedWindow]) -> None:
        """:meth:`stage` closed windows; a partition's windows staged together form groups of
        up to ``GROUP_ROWS`` rows (a window larger than that is a group of its own)."""
        groups: dict[int, tuple[int, int]] = {}  # partition -> (open group, its rows)
        for window in windows:
            if not window.rows:
                self.stage(window)
                continue
            group, rows = groups.get(window.partition, (-1, GROUP_ROWS))
            if rows + len(window.rows) > GROUP_ROWS:
                group, rows = self._partition(window.partition).seq + 1, 0
            self.stage(window, group=group)
            groups[window.partition] = (group, rows + len(window.rows))

    def stage(self, window: ClosedWindow, *, group: int | None = None) -> None:
        """Move a closed window's rows into the outbox, in ``group`` (by default a group of its
        own). The emission is written before the deltas are deleted: deltas a crash leaves
        behind are not newer than the emission, and are ignored when the partition is read again."""
        p = self._partition(window.partition)
        if window.rows:
            p.seq += 1
            group = p.seq if group is None else group
            if not 0 <= group <= p.seq:
                raise ValueError(f"group {group} is not an emission of partition {window.partition}")
            prefix = f"{window.partition}|{OUTBOX}|{window.start}|{window.offset}"
            keys = p.outboxes[(window.start, window.offset)] = self._put_chunked(
                window.partition, prefix, [p.seq, group], window.rows,
                sid_at=METRIC_COLUMNS.index("series_id"), tags_at=METRIC_COLUMNS.index("tags"),
            )
            p.staged[(window.start, window.offset)] = replace(window, keys=keys, seq=p.seq, group=group)
            self.state.put(window.partition, f"{window.partition}|{SEQ}", [p.seq])
        for key in window.keys:
            self.state.delete(window.partition, key)
        left = p.windows.pop(window.start, None)
        if left is not None and left.unwritten:  # the marker may have waited for it
            self._settle(window.partition, p)

    def outbox(self, partitions: Iterable[int]) -> list[ClosedWindow]:
        """The staged windows of ``partitions`` not stored yet, in the order they were staged."""
        found = []
        for partition in partitions:
            p = self._partition(partition)
            for (start, offset), keys in p.outboxes.items():
                if (start, offset) in p.stored:
                    continue
                if (start, offset) in p.staged:  # no need to decode what memory holds
                    found.append(p.staged[(start, offset)])
                    continue
                rows, seq, group = [], -1, -1
                for key in keys:
                    value = self.state.get(key) or [-1, 0, []]
                    seq, group = value[0], value[1] if len(value) == 4 else value[0]
                    rows += [_row_from_state(r) for r in value[-1]]
                found.append(ClosedWindow(partition, start, offset, keys, rows, int(seq), int(group)))
        return sorted(found, key=lambda w: (w.partition, w.seq))

    def done(self, window: ClosedWindow) -> None:
        """Drop a stored emission from the outbox. One newer than the partition's marker (read
        back after a crash that cut the flush before the marker) stays in the state until the
        marker covers it: until then it is what keeps a replay from applying its points again."""
        p = self._partition(window.partition)
        name = (window.start, window.offset)
        p.staged.pop(name, None)
        if window.offset > p.applied:
            if name in p.outboxes:
                p.stored.add(name)
            return
        for key in p.outboxes.pop(name, []):
            self.state.delete(window.partition, key)


def _chunk_number(key: str) -> int:
    return int(key.rsplit("|", 1)[1])
