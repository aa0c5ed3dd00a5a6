"""The worker serves the console's routes only with ``worker.console`` on."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from sluice.settings import Settings
from sluice.streams.app import Worker
from sluice.streams.console.views import STATIC


@pytest.mark.parametrize("console", [True, False])
def test_the_console_setting_mounts_the_routes(tmp_path: Path, console: bool) -> None:
    settings = Settings(
        data_dir=tmp_path, kafka={"bootstrap": "127.0.0.1:1"},
        auth={"jwt_secret": "unit-secret-" + secrets.token_hex(32)}, worker={"console": console},
    )  # type: ignore[arg-type]
    routes = {path for path in Worker(settings).app.web.views if path.startswith("/console")}
    api = {f"/console/api/{name}" for name in ("pipeline", "tenants", "keys", "names", "query")}
    static = {f"/console/static/{name}" for name in STATIC}
    assert routes == ({"/console", "/console/"} | api | static if console else set())
