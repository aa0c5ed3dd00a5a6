"""``sluice query``: one key's metrics, logs or events, or a raw read-only SQL query (admin).

    sluice query metrics --key K --name N [--window 1s|1m] [--since 15m] [--tag k=v] [--group-by TAG] [--token T]
    sluice query logs|events --key K [--since 5m] [--grep TEXT] [--limit N] [--token T]
    sluice query [sql] "SELECT ..."

Scoped queries bind every user value as a ClickHouse parameter. They run on the ClickHouse
server when ``SLUICE_CLICKHOUSE_URL`` is set, else through the worker that owns chDB, else on
chDB directly. Through the worker, a scoped query carries the key's token (``--token`` or
``SLUICE_TOKEN``) or else the admin credential; raw SQL carries the admin credential
(``SLUICE_QUERY_ADMIN_TOKEN``, else the one ``sluice dev`` keeps in the data dir).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from sluice.exceptions import SluiceError
from sluice.settings import Settings
from sluice.streams import scoped

USAGE = "sluice query [sql] SQL | metrics --key K --name N | logs --key K | events --key K"
SCOPED = ("metrics", "logs", "events")


def add_arguments(parser: argparse.ArgumentParser, duration: Callable[[str], float]) -> None:
    """The options of ``sluice query``; ``duration`` parses values like ``15m``."""
    parser.add_argument("words", nargs="+", metavar="metrics|logs|events|[sql] SQL")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
    parser.add_argument("--key", help="the access key (metrics, logs, events)")
    parser.add_argument("--since", type=duration, help="how far back, e.g. 15m (default 15m for metrics, else 5m)")
    parser.add_argument("--name", help="metrics: the metric's name")
    parser.add_argument("--window", choices=sorted(scoped.METRIC_TABLES), help="metrics: window size (default 1s)")
    parser.add_argument("--tag", action="append", metavar="KEY=VALUE", help="metrics: only series with this tag")
    parser.add_argument("--group-by", metavar="TAG", help="metrics: a row per window and value of this tag")
    parser.add_argument("--grep", metavar="TEXT", help="logs, events: only those containing TEXT")
    parser.add_argument("--limit", type=int, help="logs, events: at most this many, the newest (default 1000)")
    parser.add_argument(
        "--token", help="metrics, logs, events: the key's access token (default: $SLUICE_TOKEN, else the admin credential)",
    )


def scoped_query(database: str, args: argparse.Namespace, now: float | None = None) -> scoped.Query:
    """The query of ``sluice query metrics|logs|events`` with these arguments."""
    return scoped.build(database, scoped_spec(args, now))


def scoped_spec(args: argparse.Namespace, now: float | None = None) -> dict[str, Any]:
    """The spec (see :func:`scoped.build`) of ``sluice query metrics|logs|events`` with these arguments."""
    what = args.words[0]
    now = time.time() if now is None else now
    if len(args.words) > 1:
        raise SluiceError(f"unexpected {args.words[1]!r} after `query {what}`", hint=USAGE)
    if not args.key:
        raise SluiceError(f"`sluice query {what}` needs --key", hint="queries are scoped to one access key")
    misplaced = (
        {"--grep": args.grep, "--limit": args.limit}
        if what == "metrics"
        else {"--name": args.name, "--tag": args.tag, "--group-by": args.group_by, "--window": args.window}
    )
    for option, value in misplaced.items():
        if value is not None:
            raise SluiceError(f"{option} does not apply to `sluice query {what}`", hint=USAGE)
    if what == "metrics":
        if not args.name:
            raise SluiceError("`sluice query metrics` needs --name")
        tags = {}
        for pair in args.tag or []:
            k, eq, v = pair.partition("=")
            if not (eq and k):
                raise SluiceError(f"--tag {pair!r} is not KEY=VALUE")
            tags[k] = v
        since = 900.0 if args.since is None else args.since
        return {
            "stream": what, "key": args.key, "name": args.name, "window": args.window or "1s",
            "since": int(now - since), "tags": tags, "group_by": args.group_by,
        }
    since = 300.0 if args.since is None else args.since
    if args.limit is not None and args.limit < 1:
        raise SluiceError(f"--limit must be >= 1, got {args.limit}")
    return {
        "stream": what, "key": args.key, "since_ns": int((now - since) * 1e9), "grep": args.grep,
        "limit": 1000 if args.limit is None else args.limit,
    }


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``sluice query``: print the result of a scoped or a raw query."""
    from sluice.cli.output import print_rows  # binds sys.stdout when imported
    from sluice.streams.query import run_query, run_scoped  # the ClickHouse and Kafka clients load slowly

    words = args.words
    if words[0] in SCOPED:
        spec = scoped_spec(args)
        query = scoped.build(settings.clickhouse.database, spec)
        columns, rows = scoped.present(query, *run_scoped(settings, spec, args.token or os.environ.get("SLUICE_TOKEN")))
    else:
        if args.token:
            raise SluiceError("--token applies to metrics, logs and events; raw SQL uses the admin credential",
                              hint="set SLUICE_QUERY_ADMIN_TOKEN")
        if words[0] == "sql":
            words = words[1:]
        if len(words) != 1:
            raise SluiceError("expected one SQL statement (quote it)", hint=USAGE)
        columns, rows = run_query(settings, words[0])
    print_rows(columns, rows, args.format)
    return 0
