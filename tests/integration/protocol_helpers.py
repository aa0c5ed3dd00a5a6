"""Helpers of the protocol end-to-end tests: a gateway with every listener, metric rows, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sluice.settings import ProtocolsSettings, Settings
from tests.fixtures.stack import WorkerProcess


def with_protocols(settings: Settings, unique: str) -> Settings:
    """``settings`` with the UDP listeners (bound to keys named after the test) and HTTP writes on."""
    return settings.model_copy(update={"protocols": ProtocolsSettings(
        statsd_listen="127.0.0.1:0", statsd_access_key=f"ak_statsd_{unique}",
        influx_udp_listen="127.0.0.1:0", influx_udp_access_key=f"ak_influx_{unique}",
        http_listen="127.0.0.1:0",
    )})


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def metric_rows(worker: WorkerProcess, key: str) -> list[list[Any]]:
    """Per series, whatever its windows: name, kind, unit, tags, count, sum, min, max, last."""
    return await worker.query(
        "SELECT name, any(kind), any(unit), any(tags), sum(count), sum(sum), min(min), max(max), max(last).2 "
        f"FROM sluice.metrics_1s WHERE access_key = '{key}' "
        "GROUP BY name, series_id ORDER BY name, toString(any(tags))"
    )
