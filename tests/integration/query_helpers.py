"""Requests to a worker's query API with an exact HTTP status in the answer, and a read slow
enough to outlast the writes around it without using a CPU."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

# ClickHouse sleeps 40 µs per row, 2.6 s per block of 65,409 rows (under its 3 s per block),
# in one stream: ``sleepy_read(seconds)`` runs about that long, idle.
_SLEEP_PER_ROW = 0.00004


def sleepy_read(seconds: float) -> str:
    """SQL that runs about ``seconds`` seconds, sleeping, and returns one count."""
    rows = round(seconds / _SLEEP_PER_ROW)
    return f"SELECT count() FROM numbers({rows}) WHERE NOT ignore(sleepEachRow({_SLEEP_PER_ROW}))"


def ask(
    url: str, body: dict[str, Any] | bytes, token: str | None = None, *, headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``{url}/query`` (with ``Authorization: Bearer <token>``): status and JSON answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"{url}/query", data=data, headers=sent | (headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read()))
