"""The queries of ``sluice query metrics|logs|events``: one access key's data, as SQL with bound
parameters (``{name:Type}``, bound by ClickHouse), never with user input pasted into the text.

A scoped query travels as a *spec*, a JSON object (see :func:`build`), which the query API turns
into SQL itself: a key's token can ask for its own data, never for SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice.streams import sketch

METRIC_TABLES = {"1s": "metrics_1s", "1m": "metrics_1m"}
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Query:
    """SQL, its parameters, and how to present the result."""

    sql: str
    parameters: dict[str, Any]
    group_column: str | None = None  # the tag name to show as the group column's header
    quantiles: bool = False  # the result's last column is a sketch to turn into p50/p90/p99


def metrics(
    database: str,
    access_key: str,
    name: str,
    *,
    window: str,
    since: int,
    tags: dict[str, str] | None = None,
    group_by: str | None = None,
) -> Query:
    """Per window (and per value of the ``group_by`` tag): count, sum, min, max, avg, last and the
    sketch of one metric of one key since the unix time ``since``; ``tags`` filter series."""
    try:
        table = METRIC_TABLES[window]
    except KeyError:
        raise ValueError(f"window must be one of {sorted(METRIC_TABLES)}, got {window!r}") from None
    params: dict[str, Any] = {"key": access_key, "name": name, "since": since}
    where = ["m.access_key = {key:String}", "m.name = {name:String}", "m.window_start >= toDateTime({since:UInt32}, 'UTC')"]
    for i, (k, v) in enumerate(sorted((tags or {}).items())):
        where.append(f"m.tags[{{tk{i}:String}}] = {{tv{i}:String}}")
        params[f"tk{i}"], params[f"tv{i}"] = k, v
    group = ""
    if group_by is not None:
        params["group"] = group_by
        group = "m.tags[{group:String}] AS tag_value, "
    # Columns are named through the table alias: the result's aliases shadow bare names.
    sql = (
        f"SELECT m.window_start AS window_start, {group}any(m.kind) AS kind, sum(m.count) AS count, "
        "sum(m.sum) AS sum, min(m.min) AS min, max(m.max) AS max, sum(m.sum) / sum(m.count) AS avg, "
        "max(m.last).2 AS last, sumMap(m.sketch) AS sketch "
        f"FROM {database}.{table} AS m WHERE {' AND '.join(where)} "
        f"GROUP BY window_start{', tag_value' if group else ''} ORDER BY window_start{', tag_value' if group else ''}"
    )
    return Query(sql, params, group_by, quantiles=True)


def names(database: str, access_key: str, *, window: str, search: str, limit: int) -> Query:
    """Up to ``limit`` metric names of one key containing ``search`` (case-insensitive), the most
    recently written first."""
    try:
        table = METRIC_TABLES[window]
    except KeyError:
        raise ValueError(f"window must be one of {sorted(METRIC_TABLES)}, got {window!r}") from None
    sql = (
        f"SELECT m.name AS name FROM {database}.{table} AS m WHERE m.access_key = {{key:String}} "
        "AND positionCaseInsensitive(m.name, {search:String}) > 0 "
        "GROUP BY name ORDER BY max(m.window_start) DESC, name LIMIT {limit:UInt32}"
    )
    return Query(sql, {"key": access_key, "search": search, "limit": limit})


@dataclass(frozen=True)
class _Stream:
    table: str
    columns: tuple[str, ...]
    searched: tuple[str, ...] = field(default=())


_STREAMS = {
    "logs": _Stream("logs", ("timestamp", "source_id", "instance_id", "type", "payload", "tags"), ("payload",)),
    "events": _Stream("events", ("timestamp", "source_id", "instance_id", "title", "body", "tags"), ("title", "body")),
}


def records(database: str, stream: str, access_key: str, *, since_ns: int, grep: str | None, limit: int) -> Query:
    """The newest ``limit`` logs or events of one key since ``since_ns``, oldest first; with
    ``grep``, only those whose text contains it (case-sensitive)."""
    s = _STREAMS[stream]
    params: dict[str, Any] = {"key": access_key, "since": since_ns, "limit": limit}
    where = ["access_key = {key:String}", "timestamp >= fromUnixTimestamp64Nano({since:Int64})"]
    if grep is not None:
        params["grep"] = grep
        where.append("(" + " OR ".join(f"position({c}, {{grep:String}}) > 0" for c in s.searched) + ")")
    order = "timestamp, kafka_partition, kafka_offset, batch_index"
    sql = (
        f"SELECT * FROM (SELECT {', '.join(s.columns)}, kafka_partition, kafka_offset, batch_index "
        f"FROM {database}.{s.table} FINAL WHERE {' AND '.join(where)} "
        f"ORDER BY {order.replace(', ', ' DESC, ')} DESC LIMIT {{limit:UInt32}}) ORDER BY {order}"
    )
    return Query(sql, params)


STREAMS = ("metrics", *_STREAMS)
_SPEC_FIELDS = {
    "metrics": {"stream", "key", "name", "window", "since", "tags", "group_by"},
    "records": {"stream", "key", "since_ns", "grep", "limit"},
}


_KINDS = {str: "a string", int: "an integer", dict: "an object"}


def _field(spec: Mapping[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value = spec.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"scoped query field {name!r} must be {_KINDS[kind]}, got {value!r}")
    return value


def build(database: str, spec: Mapping[str, Any]) -> Query:
    """The query of a spec: ``{"stream": "metrics", "key", "name", "window", "since", "tags",
    "group_by"}`` (see :func:`metrics`) or ``{"stream": "logs"|"events", "key", "since_ns", "grep",
    "limit"}`` (see :func:`records`); ValueError naming the field that is missing or wrong."""
    stream = spec.get("stream")
    if stream not in STREAMS:
        raise ValueError(f"scoped query field 'stream' must be one of {list(STREAMS)}, got {stream!r}")
    allowed = _SPEC_FIELDS["metrics" if stream == "metrics" else "records"]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"unknown fields for a scoped {stream} query: {unknown}")
    key = _field(spec, "key", str)
    if not key:
        raise ValueError("scoped query field 'key' must not be empty")
    if stream == "metrics":
        tags = _field(spec, "tags", dict, optional=True) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise ValueError("scoped query field 'tags' must map strings to strings")
        return metrics(
            database, key, _field(spec, "name", str), window=_field(spec, "window", str),
            since=_field(spec, "since", int), tags=tags, group_by=_field(spec, "group_by", str, optional=True),
        )
    limit = _field(spec, "limit", int)
    if limit < 1:
        raise ValueError(f"scoped query field 'limit' must be >= 1, got {limit}")
    return records(
        database, stream, key, since_ns=_field(spec, "since_ns", int), grep=_field(spec, "grep", str, optional=True),
        limit=limit,
    )


def present(query: Query, columns: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows to show: group header renamed, sketch turned into quantiles,
    source positions dropped."""
    columns = list(columns)
    if query.group_column is not None:
        columns[columns.index("tag_value")] = query.group_column
    if query.quantiles:
        i = columns.index("sketch")
        columns[i:i + 1] = [f"p{round(q * 100)}" for q in QUANTILES]
        rows = [r[:i] + sketch.quantiles(r[i] or {}, QUANTILES) + r[i + 1:] for r in rows]
    hidden = {"kafka_partition", "kafka_offset", "batch_index"}
    keep = [i for i, c in enumerate(columns) if c not in hidden]
    return [columns[i] for i in keep], [[r[i] for i in keep] for r in rows]
