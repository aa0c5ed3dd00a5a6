"""Reads from outside the worker (the query API, ``sluice query``): ClickHouse connections and
threads of their own, never the inserts'.

Each read runs on a connection of its own: a chDB handle (one process hosts one chDB engine; its
handles share the data, run their statements in parallel, and each keeps its own session, so a
``SET`` or a refused statement's ``SETTINGS`` stays on the handle it ran on) or a server client.
A connection's limits are set first and ``readonly = 1`` last: nothing sent on it can lift them,
write, or change another connection's settings. What ``readonly`` lets through (KILL QUERY,
SYSTEM, INTO OUTFILE, a second statement) :mod:`sluice.streams.statements` refuses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from sluice.settings import QuerySettings, Settings
from sluice.streams.clickhouse import connect
from sluice.streams.exceptions import ClickHouseUnavailable, QueryError
from sluice.streams.statements import StatementRefused, check_tree, one_statement

log = logging.getLogger(__name__)

Result = tuple[list[str], list[list[Any]]]

# ClickHouse error codes of a read refused or stopped (see refusal).
_READONLY, _TIMEOUT, _TOO_MANY_ROWS, _MEMORY, _CANCELLED = 164, 159, 396, 241, 394
_REFUSED = "refused: queries are read-only (readonly mode): "


class ReadRefused(QueryError):
    """A read not answered with rows: ``status`` is its HTTP status, ``outcome`` the counter's name."""

    def __init__(self, message: str, status: int, outcome: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


def session_settings(query: QuerySettings) -> dict[str, Any]:
    """The ClickHouse settings of a read connection, ``readonly`` last (it freezes the others)."""
    return {
        "max_execution_time": query.timeout,
        "max_result_rows": query.max_result_rows,
        "result_overflow_mode": "throw",
        "max_memory_usage": query.max_memory_bytes,
        "readonly": 1,
    }


def refusal(exc: ClickHouseError, query: QuerySettings) -> ReadRefused:
    """What a read that ClickHouse refused or stopped is answered with."""
    detail = str(exc).strip()
    code = getattr(exc, "code", None)
    if code == _READONLY:
        return ReadRefused(f"{_REFUSED}{detail}", 403, "readonly")
    if code == _TIMEOUT:
        return ReadRefused(
            f"the query ran longer than query.timeout ({query.timeout:g}s) and was stopped", 408, "timed_out"
        )
    if code == _TOO_MANY_ROWS:
        return ReadRefused(
            f"the result has more than query.max_result_rows ({query.max_result_rows}) rows", 422, "too_large"
        )
    if code == _MEMORY:
        return ReadRefused(
            f"the query needs more than query.max_memory_bytes ({query.max_memory_bytes}) of memory", 422, "too_large"
        )
    if code == _CANCELLED:
        return ReadRefused("the query was cancelled: the worker is stopping", 503, "cancelled")
    return ReadRefused(f"query failed: {detail}", 400, "failed")


class Reader:
    """Read-only queries, at most ``query.max_concurrent`` at once, each on its own connection and
    thread; a read waits at most ``query.queue_timeout`` for one (then :class:`ReadRefused`, 429).
    ``ready`` is awaited before each read (the worker's: its schema is migrated)."""

    def __init__(self, settings: Settings, ready: Callable[[], Awaitable[None]] | None = None) -> None:
        self._settings = settings
        self._ready = ready
        self._query = settings.query
        self._executor = ThreadPoolExecutor(self._query.max_concurrent, thread_name_prefix="clickhouse-read")
        self._idle: queue.SimpleQueue[Client] = queue.SimpleQueue()  # connections not in use
        self._slots: asyncio.Semaphore | None = None  # made in the event loop that reads
        self._running: set[concurrent.futures.Future[Result]] = set()
        # Every read's text starts with this comment, by which stop() finds and cancels them.
        self._mark = f"/* sluice-read {uuid.uuid4().hex} */"
        self._stopping = False
        self._parser: Client | None = None  # for EXPLAIN AST, shared by the read threads
        self._parser_lock = threading.Lock()

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Result:
        """Column names and rows of a read-only query; :class:`ReadRefused` otherwise."""
        if self._stopping:
            raise ReadRefused("the worker is stopping", 503, "cancelled")
        if self._ready is not None:
            try:
                await self._ready()
            except ClickHouseUnavailable as exc:
                raise ReadRefused(str(exc), 503, "unavailable") from exc
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._query.max_concurrent)
        slots = self._slots
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), self._query.queue_timeout)
            except TimeoutError:
                raise ReadRefused(
                    f"busy: {self._query.max_concurrent} queries are running (query.max_concurrent) and none "
                    f"finished within query.queue_timeout ({self._query.queue_timeout:g}s); retry later",
                    429, "busy",
                ) from None
        else:
            await slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(self._run, sql, parameters)
        except RuntimeError:  # shut down
            slots.release()
            raise ReadRefused("the worker is stopping", 503, "cancelled") from None
        self._running.add(future)

        def done(f: concurrent.futures.Future[Result]) -> None:
            # The slot is free once the statement ended, not when its caller stopped waiting.
            self._running.discard(f)
            try:
                loop.call_soon_threadsafe(slots.release)
            except RuntimeError:  # the loop is closed: nobody waits for a slot any more
                pass

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def _run(self, sql: str, parameters: dict[str, Any] | None) -> Result:
        """Check and run one read on an idle connection (a new one if none is); in a read thread."""
        try:
            sql = one_statement(sql)
            check_tree(self._tree(sql, parameters))
        except StatementRefused as exc:
            raise ReadRefused(f"{_REFUSED}{exc}", 403, "readonly") from exc
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._connect(session_settings(self._query))
        try:
            result = client.query(f"{self._mark}\n{sql}", parameters=parameters)
            return list(result.column_names), [list(r) for r in result.result_rows]
        except ClickHouseError as exc:
            raise refusal(exc, self._query) from exc
        finally:
            if self._stopping:
                client.close()
            else:
                self._idle.put(client)

    def _tree(self, sql: str, parameters: dict[str, Any] | None) -> str:
        """EXPLAIN AST of one statement, on a read-only connection of its own without a limit on
        result rows (a tree can be longer than a result may be); parsing takes about 0.5 ms."""
        with self._parser_lock:
            if self._parser is None:
                self._parser = self._connect({"max_execution_time": self._query.timeout, "readonly": 1})
            try:
                return self._parser.raw_query(f"EXPLAIN AST {sql}", parameters=parameters).decode()
            except ClickHouseError as exc:
                raise refusal(exc, self._query) from exc

    def _connect(self, session: dict[str, Any]) -> Client:
        try:
            return connect(self._settings, session)
        except ClickHouseUnavailable as exc:
            raise ReadRefused(str(exc), 503, "unavailable") from exc

    async def stop(self, timeout: float = 5.0) -> None:
        """Take no more reads, cancel the running ones and close the connections; waits at most
        about ``timeout`` seconds for running reads (ClickHouse ends them by ``query.timeout``)."""
        self._stopping = True
        running = list(self._running)
        if running:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._cancel_running), timeout)
            except (TimeoutError, ClickHouseError, ClickHouseUnavailable) as exc:
                log.warning("could not cancel the running queries: %s", str(exc) or "timed out")
            # Their callers take their outcomes; this only waits for them to end.
            await asyncio.to_thread(concurrent.futures.wait, running, timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._parser_lock:
            if self._parser is not None:
                self._parser.close()
                self._parser = None
        while True:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                break
            client.close()

    def _cancel_running(self) -> None:
        """``KILL QUERY`` this reader's statements, on a connection that is not read-only."""
        client = connect(self._settings)
        try:
            client.command(f"KILL QUERY WHERE startsWith(query, '{self._mark}') ASYNC")
        finally:
            client.close()
