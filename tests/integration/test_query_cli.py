"""`sluice query metrics|logs|sql` as a user runs it, through the worker's /query endpoint:
one key's data only, user input bound as parameters, quantiles from the merged sketches; a key's
token reads that key only, raw SQL needs the admin credential."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from sluice.cli.query import USAGE
from sluice.client import counter_envelope, log_envelope, timer_envelope
from sluice.ingress import Gateway, issue_token
from sluice.settings import Settings
from sluice.streams import sketch
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.query_helpers import ask
from tests.integration.test_end_to_end import NS, client_for, gateway  # noqa: F401 (gateway: a fixture)

SLUICE = [sys.executable, "-m", "sluice.cli.main"]


async def sluice(
    settings: Settings, *args: str, admin: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`sluice *args` with these settings (without the admin credential unless ``admin``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")} | settings.to_env() | (env or {})
    if not admin:
        del env["SLUICE_QUERY_ADMIN_TOKEN"]
    return await asyncio.to_thread(
        subprocess.run, SLUICE + list(args), env=env, capture_output=True, text=True, timeout=60
    )


async def as_json(settings: Settings, *args: str, **how: Any) -> list[dict[str, Any]]:
    done = await sluice(settings, *args, "--format", "json", **how)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


async def test_scoped_and_raw_queries(gateway: Gateway, worker_process: WorkerProcess, unique: str) -> None:
    settings = gateway.settings
    key = await add_key(gateway.keys, f"ak_{unique}")
    other = await add_key(gateway.keys, f"ak_o_{unique}")
    worker_process.start()
    s0 = time.time_ns() // NS - 120
    async with client_for(gateway, key) as a, client_for(gateway, other) as b:
        assert await a.send([
            counter_envelope("requests", 1, timestamp=s0 * NS, tags={"route": "/", "env": "prod"}),
            counter_envelope("requests", 2, timestamp=s0 * NS + 1, tags={"route": "/a", "env": "prod"}),
            counter_envelope("requests", 4, timestamp=(s0 + 1) * NS, tags={"route": "/a", "env": "dev"}),
            log_envelope("GET / 200", timestamp=s0 * NS),
            log_envelope("GET /a 500", timestamp=s0 * NS + 1),
        ] + [timer_envelope("db", s0 * NS - ms * 1_000_000, s0 * NS) for ms in range(1, 101)]) == 105
        assert await b.send([
            counter_envelope("requests", 100, timestamp=s0 * NS), log_envelope("GET / other", timestamp=s0 * NS)
        ]) == 2
    await worker_process.caught_up()

    rows = await as_json(settings, "query", "metrics", "--key", key, "--name", "requests", "--since", "15m")
    assert [(r["window_start"], r["count"], r["sum"], r["min"], r["max"], r["p50"]) for r in rows] == [
        (_ts(s0), 2, 3.0, 1.0, 2.0, None), (_ts(s0 + 1), 1, 4.0, 4.0, 4.0, None)
    ]
    rows = await as_json(
        settings, "query", "metrics", "--key", key, "--name", "requests", "--window", "1m",
        "--tag", "env=prod", "--group-by", "route",
    )
    assert [(r["route"], r["count"], r["sum"]) for r in rows] == [("/", 1, 1.0), ("/a", 1, 2.0)]
    (timers,) = await as_json(settings, "query", "metrics", "--key", key, "--name", "db", "--window", "1m")
    assert timers["count"] == 100 and timers["kind"] == "timer"
    for q in (50, 90, 99):
        want = float(1 + (q * 99) // 100)  # the exact quantile of 1..100 ms
        assert abs(timers[f"p{q}"] - want) <= sketch.RELATIVE_ERROR * want, (q, timers)

    logs = await as_json(settings, "query", "logs", "--key", key, "--grep", "GET /")
    assert [r["payload"] for r in logs] == ["GET / 200", "GET /a 500"]
    assert [r["payload"] for r in await as_json(settings, "query", "logs", "--key", key, "--grep", "500")] == [
        "GET /a 500"
    ]
    assert await as_json(settings, "query", "logs", "--key", f"{key}' OR 1=1 --", "--grep", "GET") == []
    assert await as_json(settings, "query", "logs", "--key", key, "--grep", "' OR 1=1 --") == []

    # The admin path: raw SQL, bare or after `sql`, read-only.
    sql = "SELECT access_key, sum(count) AS n FROM sluice.metrics_1s WHERE name = 'requests' GROUP BY access_key ORDER BY n"
    expected = [{"access_key": other, "n": 1}, {"access_key": key, "n": 3}]
    assert await as_json(settings, "query", sql) == expected
    assert await as_json(settings, "query", "sql", sql) == expected
    refused = await sluice(settings, "query", "DROP TABLE sluice.logs")
    assert refused.returncode == 1 and "readonly" in refused.stderr.lower()
    wrong = await sluice(settings, "query", "logs", "--key", key, "--name", "x")
    assert (wrong.returncode, wrong.stderr) == (1, f"sluice: --name does not apply to `sluice query logs` (hint: {USAGE})\n")

    # A key's token reads that key's data (--token or SLUICE_TOKEN), never another's nor raw SQL.
    token = issue_token(settings.auth, key, 60)
    mine = await as_json(settings, "query", "logs", "--key", key, "--token", token, admin=False)
    assert [r["payload"] for r in mine] == ["GET / 200", "GET /a 500"]
    assert await as_json(settings, "query", "logs", "--key", key, admin=False, env={"SLUICE_TOKEN": token}) == mine
    theirs = await sluice(settings, "query", "metrics", "--key", other, "--name", "requests", "--token", token, admin=False)
    assert (theirs.returncode, theirs.stdout, theirs.stderr) == (
        1, "", f"sluice: the worker refused the query (HTTP 403): the token of key {key!r} may not read key {other!r}\n"
    )
    raw = await sluice(settings, "query", sql, admin=False, env={"SLUICE_TOKEN": token})
    assert (raw.returncode, raw.stdout) == (1, "")
    assert raw.stderr.startswith("sluice: the worker refused the query (HTTP 401): missing or malformed 'Authorization'")
    assert raw.stderr.endswith("(hint: raw SQL needs the admin credential (SLUICE_QUERY_ADMIN_TOKEN); a key's metrics "
                               "or logs, that key's token (--token or SLUICE_TOKEN))\n")


async def test_the_query_api_authenticates_and_scopes_every_request(
    gateway: Gateway, worker_process: WorkerProcess, unique: str
) -> None:
    settings = gateway.settings
    key = await add_key(gateway.keys, f"ak_{unique}")
    other = await add_key(gateway.keys, f"ak_o_{unique}")
    off = await add_key(gateway.keys, f"ak_off_{unique}", enabled=False)
    worker_process.start()
    async with client_for(gateway, key) as a, client_for(gateway, other) as b:
        assert await a.send([log_envelope("mine", timestamp=time.time_ns())]) == 1
        assert await b.send([log_envelope("theirs", timestamp=time.time_ns())]) == 1
    await worker_process.caught_up()
    url, token = worker_process.url, issue_token(settings.auth, key, 60)
    admin = settings.query.admin_token.get_secret_value() if settings.query.admin_token else ""

    def logs(of: str) -> dict[str, Any]:
        return {"scoped": {"stream": "logs", "key": of, "since_ns": 0, "grep": None, "limit": 10}}

    raw = {"sql": "SELECT payload FROM sluice.logs FINAL ORDER BY payload"}
    no_credential = (401, {"error": "missing or malformed 'Authorization' header: expected 'Bearer <token>' "
                                    "(a key's access token, or the admin credential for raw SQL)"})
    assert await asyncio.to_thread(ask, url, raw) == no_credential
    assert await asyncio.to_thread(ask, url, logs(key)) == no_credential
    assert await asyncio.to_thread(ask, url, raw, admin[:-1] + "x") == (401, {"error": "malformed token: Not enough segments"})
    assert await asyncio.to_thread(ask, url, logs(other), token) == (
        403, {"error": f"the token of key {key!r} may not read key {other!r}"}
    )
    assert await asyncio.to_thread(ask, url, raw, token) == (403, {"error": (
        f"raw SQL needs the admin credential; the token of key {key!r} reads only that key's metrics, logs and events"
    )})
    # The x-access-key header, when sent, must be the token's key.
    assert await asyncio.to_thread(ask, url, logs(other), token, headers={"x-access-key": other}) == (
        401, {"error": f"token subject {key!r} does not match x-access-key {other!r}"}
    )
    assert await asyncio.to_thread(ask, url, logs(off), issue_token(settings.auth, off, 60)) == (
        403, {"error": f"access key {off!r} is disabled"}
    )
    assert await asyncio.to_thread(ask, url, {"scoped": {"stream": "logs", "key": key}}, token) == (
        400, {"error": "scoped query field 'limit' must be an integer, got None"}
    )

    for credential, of, payloads in ((token, key, ["mine"]), (admin, other, ["theirs"])):
        status, answer = await asyncio.to_thread(ask, url, logs(of), credential)
        payload = answer["columns"].index("payload")
        assert (status, [r[payload] for r in answer["rows"]]) == (200, payloads)
    assert await asyncio.to_thread(ask, url, raw, admin) == (200, {"columns": ["payload"], "rows": [["mine"], ["theirs"]]})
    big = json.dumps({"sql": "SELECT '" + "x" * (1 << 20) + "'"}).encode()
    assert await asyncio.to_thread(ask, url, big, admin) == (413, {"error": "Maximum request body size 1048576 exceeded."})
    counters = worker_process.status()["counters"]
    assert {k: counters[f"queries_{k}"] for k in ("ok", "unauthenticated", "forbidden", "bad_request")} == {
        "ok": 3, "unauthenticated": 4, "forbidden": 3, "bad_request": 2
    }
    assert "Traceback" not in worker_process.log_path.read_text()


def _ts(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
