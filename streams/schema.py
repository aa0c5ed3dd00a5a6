"""The ClickHouse schema's statements for one server or a cluster, rendered from one source.

The migrations in ``deploy/clickhouse/*.sql`` are written for one server; they are the only
source. On a cluster (``clickhouse.cluster``) each statement becomes its cluster form:

- ``CREATE TABLE IF NOT EXISTS db.t (...) ENGINE = XMergeTree ... SETTINGS
  non_replicated_deduplication_window = N`` creates ``db.t_local ON CLUSTER`` with
  ``ReplicatedXMergeTree`` (one Keeper path per shard) and ``replicated_deduplication_window``,
  then ``db.t ON CLUSTER AS db.t_local`` with the ``Distributed`` engine, which readers query
  under the plain name. It has no sharding key, so an insert through it into several shards is
  refused: the worker inserts into the local table of one shard (see :func:`shard_of`).
- ``ALTER TABLE db.t ADD COLUMN IF NOT EXISTS ...`` alters ``t_local`` and then ``t``.

Any other statement form is refused, so a new migration cannot silently skip the cluster. Every
statement is idempotent (``IF NOT EXISTS``): workers starting at once may run the same
migration, and the second run changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOCAL_SUFFIX = "_local"
MIGRATIONS_TABLE = "schema_migrations"

_CREATE = re.compile(r"^CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) \(")
_ENGINE = re.compile(r"^\) ENGINE = (ReplacingMergeTree|AggregatingMergeTree|MergeTree)$", re.M)
_WINDOW = re.compile(r"\bnon_replicated_deduplication_window = \d+")
_ALTER = re.compile(r"^ALTER TABLE \{db\}\.(\w+) (ADD COLUMN IF NOT EXISTS .+)$", re.S)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the schema lives: a database on one server, or on ``cluster`` (non-empty)."""

    database: str
    cluster: str = ""
    deduplication_window: int = 10_000

    def __post_init__(self) -> None:
        if not _IDENT.match(self.database):
            raise ValueError(f"{self.database!r} is not a ClickHouse database name")
        if "'" in self.cluster or "\\" in self.cluster:
            raise ValueError(f"{self.cluster!r} is not a ClickHouse cluster name")

    @property
    def on_cluster(self) -> str:
        """`` ON CLUSTER 'name'`` on a cluster, else nothing."""
        return f" ON CLUSTER '{self.cluster}'" if self.cluster else ""

    def insert_table(self, table: str) -> str:
        """The table the worker inserts ``table``'s rows into: ``t_local`` on a cluster."""
        return f"{table}{LOCAL_SUFFIX}" if self.cluster else table

    def replicated(self, engine: str, table: str, *, per_shard: bool = True) -> str:
        """``engine``'s replicated form, with a Keeper path per shard (or one for all nodes)."""
        where = "{shard}" if per_shard else "all"
        return f"Replicated{engine}('/clickhouse/tables/{where}/{self.database}/{table}', '{{replica}}')"


def statements(sql: str, layout: Layout) -> list[str]:
    """The statements of one migration file, comments dropped, for ``layout``."""
    found = []
    for chunk in sql.split(";\n"):
        body = "\n".join(l for l in chunk.strip().splitlines() if not l.lstrip().startswith("--")).strip()
        if body:
            found.extend(_render(body.removesuffix(";"), layout))
    return found


def _render(statement: str, layout: Layout) -> list[str]:
    db = layout.database
    if not layout.cluster:
        return [statement.replace("{db}", db)]
    if created := _CREATE.match(statement):
        table = created.group(1)
        local = f"{table}{LOCAL_SUFFIX}"
        engine = _ENGINE.search(statement)
        if engine is None or not _WINDOW.search(statement):
            raise ValueError(f"cannot render for a cluster (engine or deduplication window): {statement[:80]}")
        body = _CREATE.sub(f"CREATE TABLE IF NOT EXISTS {db}.{local}{layout.on_cluster} (", statement)
        body = _ENGINE.sub(f") ENGINE = {layout.replicated(engine.group(1), local)}", body)
        body = _WINDOW.sub(f"replicated_deduplication_window = {layout.deduplication_window}", body)
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {db}.{table}{layout.on_cluster} AS {db}.{local}\n"
            f"ENGINE = Distributed('{layout.cluster}', '{db}', '{local}')"
        )
        return [body.replace("{db}", db), distributed]
    if altered := _ALTER.match(statement):
        table, change = altered.group(1), altered.group(2).replace("{db}", db)
        return [
            f"ALTER TABLE {db}.{table}{LOCAL_SUFFIX}{layout.on_cluster} {change}",
            f"ALTER TABLE {db}.{table}{layout.on_cluster} {change}",
        ]
    raise ValueError(f"cannot render for a cluster (not CREATE TABLE or ADD COLUMN): {statement[:80]}")


def bootstrap(layout: Layout) -> list[str]:
    """The database and the table of applied migrations, created before any migration.

    On a cluster the migrations table is replicated to every node (one Keeper path for all
    shards), so every worker sees what any worker applied. Two workers that apply a migration
    at once both record it: the table keeps one row per version (ReplacingMergeTree), and
    the insert carries a token per version, so the second is dropped as a duplicate.
    """
    db, table = layout.database, MIGRATIONS_TABLE
    engine = layout.replicated("ReplacingMergeTree", table, per_shard=False) if layout.cluster else "ReplacingMergeTree"
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}{layout.on_cluster}",
        f"CREATE TABLE IF NOT EXISTS {db}.{table}{layout.on_cluster} "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        f"ENGINE = {engine} ORDER BY version",
    ]


def shard_of(kafka_partition: int, shards: int) -> int:
    """The shard a Kafka partition's rows are inserted into: always the same one, so a replay
    of the partition (in blocks cut anywhere) meets its first copy on the same tables."""
    if shards < 1:
        raise ValueError(f"need at least one shard, got {shards}")
    return kafka_partition % shards
