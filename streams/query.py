"""Running a query for ``sluice query``: on a ClickHouse server directly, or on the embedded
chDB through the worker that owns it (its ``/query`` endpoint), or on chDB itself when no
worker is running.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from sluice.settings import Settings
from sluice.streams.clickhouse import ClickHouse
from sluice.streams.exceptions import QueryError

Result = tuple[list[str], list[list[Any]]]


def worker_url(settings: Settings) -> str:
    host = settings.worker.web_host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{settings.worker.web_port}"


def query_worker(url: str, sql: str, *, timeout: float = 30.0) -> Result:
    """Run ``sql`` through a worker's ``/query`` endpoint; ConnectionError if none answers."""
    request = urllib.request.Request(
        f"{url}/query", data=json.dumps({"sql": sql}).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise QueryError(str(message)) from exc
    except urllib.error.URLError as exc:
        raise ConnectionError(f"no worker answers at {url}: {exc.reason}") from exc
    return body["columns"], body["rows"]


async def _query_direct(settings: Settings, sql: str) -> Result:
    clickhouse = ClickHouse(settings)
    try:
        return await clickhouse.query(sql)
    finally:
        await clickhouse.stop()


def run_query(settings: Settings, sql: str) -> Result:
    """Column names and rows of a read-only query, from wherever the data can be read now."""
    if settings.clickhouse.url:
        return asyncio.run(_query_direct(settings, sql))
    try:
        return query_worker(worker_url(settings), sql)
    except ConnectionError:
        return asyncio.run(_query_direct(settings, sql))
