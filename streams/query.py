"""Reading from outside the worker: ``sluice query`` on a ClickHouse server directly, or on
the embedded chDB through the worker that owns it (its ``/query`` endpoint, with a credential),
or on chDB itself when no worker is running; and the worker's ``/status``, to wait until it has
caught up. Every path is read-only (:class:`~sluice.streams.reader.Reader`).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from sluice.kafka import read_to_end
from sluice.settings import Settings
from sluice.streams import scoped
from sluice.streams.exceptions import QueryError
from sluice.streams.reader import Reader

Result = tuple[list[str], list[list[Any]]]

DEV_QUERY_TOKEN_FILE = "dev-query-token"  # the file in the data dir where `sluice dev` keeps its admin credential
_CREDENTIAL_HINT = (
    "raw SQL needs the admin credential (SLUICE_QUERY_ADMIN_TOKEN); a key's metrics or logs, "
    "that key's token (--token or SLUICE_TOKEN)"
)


def worker_url(settings: Settings) -> str:
    host = settings.worker.web_host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{settings.worker.web_port}"


def admin_credential(settings: Settings) -> str | None:
    """``query.admin_token``, else the one ``sluice dev`` keeps in ``<data_dir>/dev-query-token``;
    None if there is neither."""
    if settings.query.admin_token is not None:
        return settings.query.admin_token.get_secret_value()
    path = settings.data_dir / DEV_QUERY_TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise QueryError(f"cannot read the admin credential in {path}: {exc}", hint="set SLUICE_QUERY_ADMIN_TOKEN") from exc


def post_query(url: str, body: Mapping[str, Any], token: str | None, *, timeout: float = 60.0) -> Result:
    """A worker's answer to a ``/query`` request with ``Authorization: Bearer <token>``: column
    names and rows; :class:`QueryError` with the worker's reason if refused, ConnectionError if
    no worker answers."""
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"{url}/query", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        hint = _CREDENTIAL_HINT if exc.code == 401 else None
        raise QueryError(f"the worker refused the query (HTTP {exc.code}): {message}", hint=hint) from exc
    except urllib.error.URLError as exc:
        raise ConnectionError(f"no worker answers at {url}: {exc.reason}") from exc
    except TimeoutError as exc:
        raise QueryError(f"the worker at {url} did not answer within {timeout:g}s") from exc
    return answer["columns"], answer["rows"]


def query_worker(
    url: str, sql: str, parameters: dict[str, Any] | None = None, *, token: str | None, timeout: float = 60.0
) -> Result:
    """Run raw read-only ``sql`` (with bound ``parameters``) through a worker's ``/query``, with the
    admin credential ``token``."""
    body = {"sql": sql} | ({"parameters": parameters} if parameters else {})
    return post_query(url, body, token, timeout=timeout)


async def _query_direct(settings: Settings, sql: str, parameters: dict[str, Any] | None) -> Result:
    reader = Reader(settings)
    try:
        return await reader.query(sql, parameters)
    finally:
        await reader.stop()


def _answer_timeout(settings: Settings) -> float:
    """How long to wait for a worker's answer: a slot, the query, and time to send the rows."""
    return settings.query.queue_timeout + settings.query.timeout + 30.0


def run_query(settings: Settings, sql: str, parameters: dict[str, Any] | None = None) -> Result:
    """Column names and rows of a read-only query, from wherever the data can be read now: a
    ClickHouse server when one is configured, else the worker that owns chDB (with the admin
    credential, see :func:`admin_credential`), else chDB."""
    if settings.clickhouse.url:
        return asyncio.run(_query_direct(settings, sql, parameters))
    try:
        return query_worker(
            worker_url(settings), sql, parameters, token=admin_credential(settings), timeout=_answer_timeout(settings)
        )
    except ConnectionError:
        return asyncio.run(_query_direct(settings, sql, parameters))


def run_scoped(settings: Settings, spec: Mapping[str, Any], token: str | None = None) -> Result:
    """Column names and rows of a scoped query (see :func:`scoped.build`), from wherever the data
    can be read now; through a worker with the key's ``token`` or else the admin credential."""
    if not settings.clickhouse.url:
        try:
            return post_query(
                worker_url(settings), {"scoped": dict(spec)}, token or admin_credential(settings),
                timeout=_answer_timeout(settings),
            )
        except ConnectionError:
            pass
    query = scoped.build(settings.clickhouse.database, spec)
    return asyncio.run(_query_direct(settings, query.sql, query.parameters))


def worker_status(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """A worker's ``/status``: partitions, positions, open windows, counters."""
    with urllib.request.urlopen(f"{url}/status", timeout=timeout) as response:
        return dict(json.loads(response.read()))


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of every partition of ``topic``.

    Tansu answers ListOffsets(latest) with the base offset of the last record batch rather than
    the high watermark, so the records from there on are read to find the real end.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        reported = await consumer.end_offsets(tps)
        ends = {tp.partition: off for tp, off in reported.items()}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, reported[tp])
        async for records in read_to_end(consumer, tps):
            last = records[-1]
            ends[last.partition] = max(ends[last.partition], last.offset + 1)
        return ends
    finally:
        await consumer.stop()


async def wait_caught_up(
    settings: Settings, url: str, timeout: float, windows: tuple[str, ...] = ("metrics_1s",)
) -> bool:
    """True once the worker at ``url`` has processed every record now on the raw topic and
    closed every window of the ``windows`` tables; False if it did not within ``timeout``
    seconds or does not answer. (1m windows of current data stay open for a minute; the
    worker emits them when it stops.)"""
    deadline = time.monotonic() + timeout
    ends = await end_offsets(settings.kafka.bootstrap, settings.kafka.raw_topic)
    while time.monotonic() < deadline:
        try:
            status = await asyncio.to_thread(worker_status, url)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        done = {int(p): o for p, o in status["positions"].items()}
        open_windows = status["open_windows"]
        if not any(open_windows.get(t, 0) for t in windows) and all(done.get(p, -1) >= end - 1 for p, end in ends.items()):
            return True
        await asyncio.sleep(0.2)
    return False
