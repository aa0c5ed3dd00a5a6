"""What each console API answers: the pipeline's series, the tenants, the keys, and one key's
metrics, metric names and logs through the scoped queries of ``/query`` (never raw SQL)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from faust.types import TP

from sluice.cli.topics import recommend_shards
from sluice.keys.models import AccessKeyConfig
from sluice.streams import scoped
from sluice.streams.console.access import ConsoleAccess
from sluice.streams.console.history import History
from sluice.streams.console.series import gateway_totals, labels_of, of_key, of_keys, without_keys, worker_totals
from sluice.streams.console.host import ConsoleHost
from sluice.streams.query_api import ADMIN, Refused
from sluice.streams.reader import ReadRefused


GATEWAY_TIMEOUT = 0.5  # seconds a scrape of the gateway's /metrics may take
VIEWED_FOR = 10.0  # seconds after a console's last request during which the gateway is scraped
PER_SHARD = 20_000.0  # envelopes/s one shard should carry: the default of `sluice keys top`
NAMES_LIMIT = 50


def gateway_metrics_url(metrics_listen: str) -> str | None:
    """The gateway's /metrics address from ``gateway.metrics_listen``; None when off or on a port
    chosen at start (0), which this process cannot know."""
    host, _, port = metrics_listen.rpartition(":")
    if not port or port == "0":
        return None
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"http://{host}:{port}/metrics"


def _last(rates: list[float | None]) -> float | None:
    return next((r for r in reversed(rates) if r is not None), None)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=GATEWAY_TIMEOUT) as response:
        return bytes(response.read()).decode()


class ConsoleData:
    """The console's answers for one worker; :meth:`sample` (every second) feeds the sparklines."""

    def __init__(self, worker: ConsoleHost, clock: Callable[[], float] = time.time) -> None:
        self._worker = worker
        self.access = ConsoleAccess(worker.query_api, worker.settings.worker.web_host)
        self.history = History()  # the pipeline's series, summed over keys
        self.key_history = History()  # the series of each key
        self._clock = clock
        self._gateway_url = gateway_metrics_url(worker.settings.gateway.metrics_listen)
        self._gateway_error: str | None = None if self._gateway_url else "gateway.metrics_listen is off or port 0"
        self._viewed_at = float("-inf")

    def refuse(self, refused: Refused) -> tuple[int, dict[str, Any]]:
        """The status and body of a refusal, counted with the query API's outcomes."""
        return self._worker.query_api.refuse(refused)

    def viewed(self) -> None:
        """A console asked for data: scrape the gateway for a while."""
        self._viewed_at = time.monotonic()

    async def sample(self) -> None:
        """Add the counters now (the gateway's too while a console is open) to the history."""
        totals, sources = worker_totals(self._worker.status()), {"worker"}
        if self._gateway_url and time.monotonic() - self._viewed_at < VIEWED_FOR:
            try:
                totals |= gateway_totals(await asyncio.to_thread(_scrape, self._gateway_url))
                sources.add("gateway")
                self._gateway_error = None
            except (OSError, ValueError) as exc:
                self._gateway_error = f"{self._gateway_url}: {exc}"
        at = self._clock()
        self.history.record(at, without_keys(totals), sources)
        self.key_history.record(at, of_keys(totals), sources)

    def pipeline(self, caller: str | None, after: float | None = None) -> dict[str, Any]:
        """Totals, rates over the last minutes (those after ``after`` only: a console asks for what
        it has not got yet), lag per partition and open windows (admin only)."""
        self.access.admin_only(caller, "the pipeline page")
        status = self._worker.status()
        return {
            "totals": self.history.latest(),
            "history": self.history.rates(after=after),
            "open_windows": status["open_windows"],
            "lag": self._lag(status["partitions"], status["positions"]),
            "gateway": {"url": self._gateway_url, "error": self._gateway_error},
        }

    def _lag(self, partitions: list[int], positions: Mapping[str, int]) -> dict[str, int | None]:
        """Records on each assigned partition not yet durable here (None before the consumer knows
        the partition's end)."""
        topic = self._worker.raw.get_topic_name()
        lag: dict[str, int | None] = {}
        for partition in partitions:
            done = positions.get(str(partition), -1)
            try:
                end = self._worker.app.consumer.highwater(TP(topic, partition))
            except Exception:  # the consumer is not started, or does not know this partition yet
                end = None
            lag[str(partition)] = None if end is None else max(0, end - 1 - done)
        return lag

    def keys(self, caller: str | None) -> list[str]:
        """The access keys the caller may read."""
        if caller is not ADMIN:
            return [caller]
        return [c.access_key for c in self._configs()]

    def _configs(self) -> list[AccessKeyConfig]:
        config = self._worker.config
        return config.store.list() if config.store.records else self._worker.keys.list()

    def tenants(self, caller: str | None) -> list[dict[str, Any]]:
        """Per visible key: its limits and shards, the totals and current rates of its series
        (gateway and worker), envelopes received per second over the last minutes, and the shards
        `sluice keys top` would advise for the current rate."""
        visible = set(self.keys(caller))
        totals = {n: v for n, v in self.key_history.latest().items() if labels_of(n)["access_key"] in visible}
        history = self.key_history.rates(set(totals))
        rows = []
        for config in self._configs():
            if config.access_key not in visible:
                continue
            names = of_key(totals, config.access_key)
            received = [
                sum(rates) for rates in zip(*(
                    [r or 0.0 for r in history["rates"][n]] for n in names
                    if n.startswith("gateway.received_envelopes") and n in history["rates"]
                ))
            ]
            now = received[-1] if received else 0.0
            rows.append({
                "key": config.access_key,
                "enabled": config.enabled,
                "shards": config.shards,
                "limits": config.limits.model_dump(),
                "series": {n: {"total": totals[n], "rate": _last(history["rates"].get(n, [])),
                               "labels": labels_of(n)} for n in names},
                "received_per_second": received,
                "advised_shards": recommend_shards(now, PER_SHARD),
            })
        return rows

    async def query(self, caller: str | None, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The columns and rows of a scoped query (the spec of ``/query``), presented as
        ``sluice query`` shows them (quantiles instead of sketches); counted like ``/query``."""
        try:
            query = scoped.build(self._worker.settings.clickhouse.database, spec)
        except ValueError as exc:
            raise Refused(400, "bad_request", str(exc)) from exc
        self.access.admit(caller, spec["key"])
        columns, rows = await self._read(query)
        columns, rows = scoped.present(query, columns, rows)
        return {"columns": columns, "rows": rows}

    async def names(self, caller: str | None, key: str, window: str, search: str) -> list[str]:
        """Up to 50 metric names of a key containing ``search``, most recent window first."""
        self.access.admit(caller, key)
        try:
            query = scoped.names(self._worker.settings.clickhouse.database, key, window=window, search=search,
                                 limit=NAMES_LIMIT)
        except ValueError as exc:
            raise Refused(400, "bad_request", str(exc)) from exc
        return [row[0] for row in (await self._read(query))[1]]

    async def _read(self, query: scoped.Query) -> tuple[list[str], list[list[Any]]]:
        api = self._worker.query_api
        try:
            result = await self._worker.reader.query(query.sql, query.parameters)
        except ReadRefused as exc:
            raise Refused(exc.status, exc.outcome, exc.message) from exc
        api.counts["ok"] += 1
        return result
