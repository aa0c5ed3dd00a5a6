"""The worker's ClickHouse connection for inserts: chDB in-process or a server, one thread,
migrations. Reads from outside the worker use connections of their own (:mod:`sluice.streams.reader`)."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver import options as _options
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from sluice.settings import Settings
from sluice.streams import native, schema
from sluice.streams.exceptions import ClickHouseUnavailable, QueryError

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

# clickhouse-connect imports pandas the first time it prepares an insert (the migrations' own, and
# the insert context the sink reads a table's column types from) only to ask whether the data is a
# DataFrame, which it never is here: 42 MiB of a worker's RSS for nothing. Unless something in
# the process uses pandas already, it is told there is none (``query_df`` is not used).
if "pandas" not in sys.modules:
    _options.pd = None
    _options.pd_time_test = None


def connect(settings: Settings, session: dict[str, Any] | None = None) -> Client:
    """A clickhouse-connect client of its own: the configured server, or a chDB handle on
    <data_dir>/clickhouse; ``session`` are ClickHouse settings applied to this client only, in
    their order (on chDB with ``SET`` on its handle, on a server with every request)."""
    ch = settings.clickhouse
    try:
        if ch.url:
            return clickhouse_connect.get_client(
                dsn=ch.url, username=ch.username, password=ch.password.get_secret_value(), settings=session
            )
        settings.chdb_path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=f"chdb://{settings.chdb_path.resolve()}", settings=session)
    except (ClickHouseError, OSError, RuntimeError) as exc:
        where = ch.url or f"chdb://{settings.chdb_path}"
        raise ClickHouseUnavailable(
            f"cannot connect to ClickHouse at {where}: {exc}",
            hint="check SLUICE_CLICKHOUSE_URL, or that no other process owns the chDB directory",
        ) from exc


def migrations() -> list[tuple[int, str, str]]:
    """The schema migrations shipped with Sluice: (version, name, SQL), in order."""
    found = []
    for entry in resources.files("sluice.streams.migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def migrate(client: Client, database: str, *, cluster: str = "", deduplication_window: int = 10_000) -> list[str]:
    """Create the database and apply the migrations not applied yet, for one server or for
    ``cluster`` (:mod:`~sluice.streams.schema`); returns their names."""
    layout = schema.Layout(database, cluster, deduplication_window)
    for statement in schema.bootstrap(layout):
        client.command(statement)
    table = f"{database}.{schema.MIGRATIONS_TABLE}"
    done = {r[0] for r in client.query(f"SELECT version FROM {table}").result_rows}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in schema.statements(sql, layout):
            client.command(statement)
        client.insert(
            table, [[version, name]], column_names=["version", "name"],
            settings={"insert_deduplication_token": f"{version}:{name}"},
        )
        applied.append(name)
        log.info("applied ClickHouse migration %s", name)
    return applied


def ttls(settings: Settings) -> dict[str, tuple[str, int]]:
    """Per table: the time column expression its TTL is on and the days to keep (0 = forever)."""
    ch = settings.clickhouse
    return {
        "logs": ("toDateTime(timestamp)", ch.ttl_days_raw),
        "events": ("toDateTime(timestamp)", ch.ttl_days_raw),
        "metrics_1s": ("window_start", ch.ttl_days_1s),
        "metrics_1m": ("window_start", ch.ttl_days_1m),
    }


def apply_ttls(client: Client, layout: schema.Layout, wanted: dict[str, tuple[str, int]]) -> list[str]:
    """Bring each table's TTL to what the settings say; only changed tables are altered (on a
    cluster, the local tables that hold the rows, on every node)."""
    changed, database = [], layout.database
    for table, (column, days) in wanted.items():
        local = layout.insert_table(table)
        engine = client.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": database, "t": local},
        ).result_rows[0][0]
        clause = f"TTL {column} + toIntervalDay({days})"
        if days and f" {clause} " not in f"{engine} ":
            client.command(f"ALTER TABLE {database}.{local}{layout.on_cluster} MODIFY {clause}")
        elif not days and " TTL " in engine:
            client.command(f"ALTER TABLE {database}.{local}{layout.on_cluster} REMOVE TTL")
        else:
            continue
        changed.append(table)
        log.info("TTL of %s.%s set to %s", database, local, f"{days} days" if days else "none")
    return changed


class ClickHouse:
    """Async access to the worker's ClickHouse client for inserts, through a single thread (one
    chDB handle runs one statement at a time). Its session is the inserts' alone: statements from
    outside the worker run on the :class:`~sluice.streams.reader.Reader`'s connections."""

    def __init__(self, settings: Settings) -> None:
        self.database = settings.clickhouse.database
        self._settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None
        self._layouts: dict[tuple[str, tuple[str, ...]], native.Layout] = {}  # by table and columns

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _connected(self) -> Client:
        """The client, connected (and the schema migrated) on first use; runs in the thread."""
        if self._client is None:
            client = connect(self._settings)
            try:
                ch = self._settings.clickhouse
                migrate(client, self.database, cluster=ch.cluster, deduplication_window=ch.deduplication_window)
                apply_ttls(client, schema.Layout(self.database, ch.cluster, ch.deduplication_window),
                           ttls(self._settings))
            except ClickHouseError as exc:
                client.close()
                raise ClickHouseUnavailable(f"cannot apply the schema migrations: {exc}") from exc
            self._client = client
            self._layouts.clear()  # the migrations may have changed a type
        return self._client

    async def start(self) -> None:
        """Connect and bring the schema up to date (otherwise done by the first call)."""
        await self._run(self._connected)

    async def ready(self) -> None:
        """Return once connected with the schema migrated: at once if so, else after :meth:`start`."""
        if self._client is None:
            await self.start()

    async def warm_up(self) -> bool:
        """:meth:`start`, so that the first insert does not wait for it; if ClickHouse is not
        there yet, say so and leave it to the first call (which the sink retries). Whether it
        connected."""
        try:
            await self.start()
        except ClickHouseUnavailable as exc:
            log.warning("%s; connecting again with the first insert", exc)
            return False
        return True

    async def insert_columns(
        self, table: str, data: Sequence[Sequence[Any]], columns: Sequence[str], token: str
    ) -> None:
        """Insert ``data``, one sequence of values per name in ``columns``; a retried insert with
        the same ``token`` is stored once."""
        def insert() -> None:
            client = self._connected()
            name = f"{self.database}.{table}"
            found = self._layouts.get((table, tuple(columns)))
            if found is None:  # the columns' types, as the table has them
                context = client.create_insert_context(name, list(columns))
                found = self._layouts[(table, tuple(columns))] = native.layout(
                    context.column_names, [t.insert_name for t in context.column_types]
                )
            client.raw_insert(
                name, list(columns), native.encode(found, data), fmt="Native",
                # Rows of one key in one block are merged by the tables' engines later anyway
                # (every read groups or uses FINAL); merging them on insert too doubled its cost.
                settings={"insert_deduplication_token": token, "optimize_on_insert": 0},
            )

        try:
            await self._run(insert)
        except ClickHouseError as exc:
            raise ClickHouseUnavailable(f"insert into {table} failed: {exc}") from exc

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[list[Any]]]:
        """Run one of the worker's own queries on the insert connection, after the inserts before
        it; column names and rows. Never for SQL from outside the worker (see ``Reader``)."""
        try:
            result = await self._run(lambda: self._connected().query(sql, parameters=parameters))
        except ClickHouseError as exc:
            raise QueryError(f"query failed: {exc}") from exc
        return list(result.column_names), [list(r) for r in result.result_rows]

    async def stop(self) -> None:
        """Close the client and its thread."""
        if self._client is not None:
            client, self._client = self._client, None
            await self._run(client.close)
        self._executor.shutdown(wait=True)
