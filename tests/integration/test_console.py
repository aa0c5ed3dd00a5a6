"""The web console in a real browser (Debian's headless Chromium through chromedriver) against a real
gateway, Tansu, `sluice worker` process and chDB: it shows the rates of a known load, draws the
values of the scoped query, filters logs, and refuses another key's data with a key's token.
Screenshots of each page go to tests/results/console/."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from sluice.client import counter_envelope, log_envelope
from sluice.ingress import Gateway
from sluice.ingress.auth import issue_token
from sluice.settings import Settings
from sluice.streams import scoped
from sluice.streams.console.views import STATIC
from sluice.tansu import free_port
from tests.fixtures.stack import WorkerProcess
from tests.integration.gateway_helpers import add_key
from tests.integration.query_helpers import ask
from tests.integration.test_end_to_end import client_for, gateway  # noqa: F401 (gateway: a fixture)

RESULTS = Path(__file__).resolve().parents[1] / "results" / "console"
NS = 1_000_000_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The stack's settings with the gateway's /metrics on a port the worker knows."""
    settings.gateway.metrics_listen = f"127.0.0.1:{free_port()}"
    return settings


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium; missing Chromium or chromedriver fails the test (`make install` installs them)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromedriver are missing: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield chrome
    chrome.quit()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """The first truthy value of ``check()``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)
    return value


def page_state(browser: webdriver.Chrome, name: str) -> Any:
    return browser.execute_script(f"return window.sluiceConsole && window.sluiceConsole.{name};")


def open_page(browser: webdriver.Chrome, url: str, fragment: str, token: str | None = None) -> None:
    """Load the console at ``#fragment`` with ``token`` (or none) in its session storage."""
    browser.get(f"{url}/console/static/console.css")  # the origin, without the page's scripts
    browser.execute_script(
        "arguments[0] ? sessionStorage.setItem('sluice-token', arguments[0]) : sessionStorage.clear();", token
    )
    browser.get(f"{url}/console/#{fragment}")


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(RESULTS / f"{name}.png"))


def epoch(value: str) -> float:
    """A window start as the query API's JSON gives it, in unix seconds."""
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


async def test_console_shows_a_known_load_charts_the_query_filters_logs_and_scopes_tokens(
    gateway: Gateway, worker_process: WorkerProcess, browser: webdriver.Chrome, unique: str
) -> None:
    key_a = await add_key(gateway.keys, f"ak_a_{unique}")
    key_b = await add_key(gateway.keys, f"ak_b_{unique}")
    worker_process.start()
    url = worker_process.url
    open_page(browser, url, "pipeline")
    # Rates are known from the first sample on: wait for one with the gateway's counters in it.
    wait_for("the gateway's counters", lambda: any(
        n.startswith("gateway.") for n in ((page_state(browser, "pipeline") or {}).get("totals") or {})))

    # The known load: 300 logs of key A (every 6th an error), 20 of key B, 5 counter points of A.
    t0 = (time.time_ns() // NS - 5) * NS
    async with client_for(gateway, key_a) as client:
        for start in range(0, 300, 100):
            batch = [log_envelope(f"{'error' if i % 6 == 0 else 'info'} line {i}", timestamp=time.time_ns())
                     for i in range(start, start + 100)]
            assert await client.send(batch) == 100
        assert await client.send([
            counter_envelope("requests", 5, timestamp=t0 + 10, tags={"route": "/a"}),
            counter_envelope("requests", 7, timestamp=t0 + 20, tags={"route": "/a"}),
            counter_envelope("requests", 1, timestamp=t0 + NS + 5, tags={"route": "/a"}),
            counter_envelope("requests", 3, timestamp=t0 + 30, tags={"route": "/b"}),
            counter_envelope("requests", 4, timestamp=t0 + 2 * NS, tags={"route": "/b"}),
        ]) == 5
    async with client_for(gateway, key_b) as client:
        assert await client.send([log_envelope(f"b line {i}", timestamp=time.time_ns()) for i in range(20)]) == 20
    await worker_process.caught_up()

    # Pipeline: the page's totals are the load, and its rates add up to it over the sampled times.
    envelopes = "worker.envelopes"
    acknowledged = "gateway.acknowledged_envelopes"  # summed over keys
    pipeline = wait_for("the load on the page", lambda: (
        p if (p := page_state(browser, "pipeline"))["totals"].get(envelopes) == 325
        and p["totals"].get(acknowledged) == 325 else None))
    row = browser.find_element("css selector", f'tr[data-series="{envelopes}"]')
    assert row.find_elements("css selector", "td")[1].text == "325"
    history = pipeline["history"]
    times = [history["start"], *history["t"]]
    for name in (envelopes, acknowledged):
        rates = history["rates"][name]
        assert round(sum((r or 0) * (b - a) for r, a, b in zip(rates, times, times[1:]))) == 325
    assert pipeline["totals"]["worker.logs"] == 320 and pipeline["totals"]["worker.points"] == 5
    assert set(pipeline["lag"].values()) == {0} and sorted(pipeline["lag"]) == ["0", "1"]
    screenshot(browser, "pipeline")

    # Tenants: a row per key, in key order, with what the gateway received and acknowledged of each.
    open_page(browser, url, "tenants")
    tenants = wait_for("the tenants page", lambda: page_state(browser, "tenants"))
    assert [t["key"] for t in tenants] == [key_a, key_b]
    for tenant, sent in zip(tenants, (305, 20)):
        series = {name.split("{")[0]: s["total"] for name, s in tenant["series"].items()}
        assert series.pop("gateway.received_bytes") > 0
        assert series == {"gateway.received_envelopes": sent, "gateway.acknowledged_envelopes": sent}
        assert tenant["advised_shards"] == 1 and sum(tenant["received_per_second"]) > 0
    cells = browser.find_elements("css selector", f'tr[data-key="{key_a}"] td')
    assert [c.text for c in cells[5:8]] == ["305", "305", "none"]
    screenshot(browser, "tenants")

    # Metrics: the chart plots the values of the scoped query, per route.
    open_page(browser, url, f"metrics?key={key_a}&name=requests&window=1s&range=900&group_by=route")
    chart = wait_for("the chart", lambda: page_state(browser, "chart"))
    token_a = issue_token(worker_process.settings.auth, key_a, 300)
    status, answer = ask(url, {"scoped": chart["spec"]}, token_a)
    assert status == 200
    columns, rows = scoped.present(scoped.build(worker_process.settings.clickhouse.database, chart["spec"]), answer["columns"], answer["rows"])
    assert chart["answer"] == {"columns": columns, "rows": rows}
    s0 = t0 // NS
    assert chart["labels"] == ["route=/a increase", "route=/b increase"]
    assert chart["data"] == [[s0, s0 + 1, s0 + 2], [12, 1, None], [3, None, 4]]
    assert [epoch(r[0]) for r in rows] == [s0, s0, s0 + 1, s0 + 2]
    assert browser.execute_script("return window.sluiceConsole.chart.plot.data;") == chart["data"]
    screenshot(browser, "metrics")
    name = browser.find_element("css selector", "#metrics-form input[name=name]")
    name.clear()
    name.send_keys("REQ")
    assert wait_for("the metric names", lambda: page_state(browser, "names")) == ["requests"]

    # Logs: key A's lines that contain "error", oldest first.
    open_page(browser, url, f"logs?key={key_a}&stream=logs&grep=error&follow=1")
    logs = wait_for("the logs", lambda: page_state(browser, "logs"))
    assert logs["texts"] == [f"error line {i}" for i in range(0, 300, 6)]
    assert len(browser.find_elements("css selector", "#log-rows tbody tr")) == 50
    screenshot(browser, "logs")

    # Key A's token: only key A is offered; key B's logs and the pipeline page are refused.
    forbidden_before = worker_process.status()["counters"]["queries_forbidden"]
    open_page(browser, url, f"logs?key={key_b}&stream=logs&grep=&follow=0", token=token_a)
    error = wait_for("the refusal", lambda: page_state(browser, "error"))
    assert error == f"403: the token of key {key_a!r} may not read key {key_b!r}"
    assert browser.find_element("id", "error").text == error
    assert page_state(browser, "logs") is None
    screenshot(browser, "refused")
    assert worker_process.status()["counters"]["queries_forbidden"] == forbidden_before + 1
    options = browser.find_elements("css selector", "#logs-form select[name=key] option")
    assert [o.get_attribute("value") for o in options] == [key_a, key_b]  # B only as the page asked for it
    open_page(browser, url, "tenants", token=token_a)
    assert [t["key"] for t in wait_for("key A's tenant row", lambda: page_state(browser, "tenants"))] == [key_a]
    open_page(browser, url, "pipeline", token=token_a)
    error = wait_for("the pipeline refusal", lambda: page_state(browser, "error"))
    assert error == (f"403: the pipeline page needs the admin credential; the token of key {key_a!r} sees only "
                     "that key's tenant row, metrics and logs")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def get(url: str, body: bytes | None = None) -> tuple[int, Any]:
    """Status and JSON answer of a console API request."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_console_api_refusals_page_weight_and_refresh_cost(
    worker_process: WorkerProcess, browser: webdriver.Chrome
) -> None:
    """Bad requests get a status and a message naming the problem; the page's bytes are its files;
    an open pipeline page asks once a second (tests/results/console/cost.json has the figures)."""
    worker_process.start()
    assert worker_process.proc is not None
    api = f"{worker_process.url}/console/api"
    assert get(f"{api}/query", b"[1]") == (400, {"error": "expected a JSON object, a scoped query spec"})
    assert get(f"{api}/query", b'{"stream": "logs", "key": "k", "since_ns": 0, "limit": 0}') == (
        400, {"error": "scoped query field 'limit' must be >= 1, got 0"})
    # Raw SQL is not a scoped query: the console has no way to it, even for the local operator.
    assert get(f"{api}/query", b'{"sql": "SELECT 1"}') == (
        400, {"error": "scoped query field 'stream' must be one of ['metrics', 'logs', 'events'], got None"})
    assert get(f"{api}/query", b'{"stream": "logs"}') == (
        400, {"error": "scoped query field 'key' must be a string, got None"})
    status, answer = get(f"{api}/query", b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert status == 413 and answer["error"].startswith("Maximum request body size")
    assert get(f"{api}/names") == (400, {"error": "the query parameter 'key' is missing"})
    assert get(f"{api}/names?key=k&window=5s") == (400, {"error": "window must be one of ['1m', '1s'], got '5s'"})
    assert get(f"{api}/pipeline", b"{}") == (405, {"error": "POST is not allowed here"})
    assert get(f"{api}/query", b"") == (
        400, {"error": "expected a JSON object, a scoped query spec: Expecting value: line 1 column 1 (char 0)"})
    counters = worker_process.status()["counters"]
    assert counters["queries_bad_request"] == 8

    assert get(f"{api}/pipeline?after=x") == (400, {"error": "the query parameter 'after' must be a unix time, got 'x'"})

    # One request to the pipeline API costs the worker this much CPU.
    before, n = cpu_seconds(worker_process.proc.pid), 50
    for _ in range(n):
        assert get(f"{api}/pipeline")[0] == 200
    cpu_per_request = (cpu_seconds(worker_process.proc.pid) - before) / n
    pid, span = worker_process.proc.pid, 6.0
    open_page(browser, worker_process.url, "pipeline")
    wait_for("the pipeline page", lambda: page_state(browser, "pipeline"))
    loaded = browser.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return [n, ...performance.getEntriesByType('resource').filter(e => e.name.includes('/static/'))]"
        ".map(e => [new URL(e.name).pathname, e.encodedBodySize]);"
    )
    files = Path(__file__).resolve().parents[2] / "streams" / "console" / "static"
    assert dict(loaded) == {
        "/console/": (files / "index.html").stat().st_size,
        **{f"/console/static/{name}": (files / name).stat().st_size for name in STATIC},
    }
    page_bytes = sum(size for _, size in loaded)

    count = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/console/api/')).length;"
    sizes = ("return performance.getEntriesByType('resource').filter(e => e.name.includes('/console/api/'))"
             ".slice(-3).map(e => e.encodedBodySize);")
    asked, before = browser.execute_script(count), cpu_seconds(pid)
    time.sleep(span)
    requests_per_second = (browser.execute_script(count) - asked) / span
    open_cpu = (cpu_seconds(pid) - before) / span
    answer_bytes = max(browser.execute_script(sizes))
    browser.get("about:blank")

    # A console asks only for the intervals it has not got; all 300 (5 minutes) would weigh this much.
    status, answer = get(f"{api}/pipeline")
    intervals = answer["history"]["t"]
    status, newer = get(f"{api}/pipeline?after={intervals[-1]}")
    assert status == 200 and newer["history"]["t"] == [] and newer["history"]["start"] == intervals[-1]
    per_interval = (len(json.dumps(answer)) - len(json.dumps(newer))) / len(intervals)
    full_bytes = round(len(json.dumps(newer)) + 300 * per_interval)
    before = cpu_seconds(pid)
    time.sleep(span)
    idle_cpu = (cpu_seconds(pid) - before) / span
    # One request when the previous answer is in and a second has passed: just under 1/s.
    assert 0.75 <= requests_per_second <= 1.0
    RESULTS.mkdir(parents=True, exist_ok=True)
    cost = {"page_bytes": page_bytes, "requests_per_second": requests_per_second,
            "worker_cpu_idle": round(idle_cpu, 4), "worker_cpu_console_open": round(open_cpu, 4),
            "worker_cpu_seconds_per_pipeline_request": round(cpu_per_request, 5),
            "pipeline_answer_bytes_full_history": full_bytes,
            "pipeline_answer_bytes_per_refresh": answer_bytes}
    (RESULTS / "cost.json").write_text(json.dumps(cost, indent=2) + "\n")
    print(cost)
