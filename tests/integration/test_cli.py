"""`sluice dev`, `sluice send` and `sluice query` as a user runs them: real processes, real
Tansu, gateway, worker and chDB; Ctrl-C loses nothing that was acknowledged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from sluice.tansu import free_port
from tests.fixtures.ports import listening_socket, plain_bind_fails, time_wait_port

SLUICE = [sys.executable, "-m", "sluice.cli.main"]


def sluice(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SLUICE + list(args), env=env, input=input, capture_output=True, text=True, timeout=120)


def dev_env(data_dir: Path, gateway: int, metrics: int, worker: int) -> dict[str, str]:
    """The environment of a `sluice dev` on these ports, without the caller's SLUICE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return env | {
        "SLUICE_DATA_DIR": str(data_dir),
        "SLUICE_GATEWAY_LISTEN": f"127.0.0.1:{gateway}",
        "SLUICE_GATEWAY_METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "SLUICE_WORKER_WEB_PORT": str(worker),
    }


def read_banner(dev: subprocess.Popen[str]) -> list[str]:
    """The lines `sluice dev` prints until it says it is running."""
    banner: list[str] = []
    assert dev.stdout is not None
    deadline = time.monotonic() + 120
    while not any(line.startswith("Ctrl-C stops everything") for line in banner):
        line = dev.stdout.readline()
        assert line and time.monotonic() < deadline, "sluice dev did not start:\n" + "".join(banner)
        banner.append(line)
    return banner


def test_dev_send_query_and_ctrl_c(tmp_path: Path) -> None:
    env = dev_env(tmp_path / "data", free_port(), free_port(), free_port())
    gateway = env["SLUICE_GATEWAY_LISTEN"]
    dev = subprocess.Popen(SLUICE + ["dev"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = read_banner(dev)
        token = next(line.split()[1] for line in banner if line.strip().startswith("token"))
        assert f"  gateway   {gateway}" in "".join(banner)

        lines = [f"line {i} ✓" for i in range(100)]
        sent = sluice(env, "send", "--target", gateway, "--access-key", "dev", "--token", token, input="\n".join(lines) + "\n")
        assert (sent.returncode, sent.stdout) == (0, "acknowledged 100 of 100 envelopes\n"), sent.stderr
        sent = sluice(env, "send", "--target", gateway, "--access-key", "dev", "--token", token, "--metrics", "50", "--batch", "7")
        assert (sent.returncode, sent.stdout) == (0, "acknowledged 50 of 50 envelopes\n"), sent.stderr
        refused = sluice(env, "send", "--target", gateway, "--access-key", "dev", "--token", "not-a-jwt", input="x\n")
        assert refused.returncode == 1
        assert refused.stderr.startswith("sluice send: UNAUTHENTICATED: malformed token")
        assert refused.stderr.endswith("0 of 1 envelopes were acknowledged\n") or "an unknown number" in refused.stderr

        statsd = "statsd udp://127.0.0.1:8125" in "".join(banner)  # on when the port was free
        if statsd:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"dev.statsd:3|c\ndev.statsd:4|c", ("127.0.0.1", 8125))

        # While the worker runs, queries go through it.
        deadline = time.monotonic() + 60
        while True:
            q = sluice(env, "query", "SELECT count() AS n FROM sluice.logs FINAL", "--format", "json")
            assert q.returncode == 0, q.stderr
            if json.loads(q.stdout) == [{"n": 100}] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert json.loads(q.stdout) == [{"n": 100}]

        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=120)
        assert dev.returncode == 0, out
    finally:
        if dev.poll() is None:
            dev.kill()

    # Everything acknowledged was written before the stack stopped; chDB is read directly now.
    q = sluice(env, "query", "SELECT payload FROM sluice.logs FINAL ORDER BY timestamp, batch_index", "--format", "json")
    assert [r["payload"] for r in json.loads(q.stdout)] == lines
    q = sluice(
        env, "query",
        "SELECT name, sum(count) AS n, sum(sum) AS total FROM sluice.metrics_1s GROUP BY name ORDER BY name",
        "--format", "csv",
    )
    header, *rows = q.stdout.splitlines()
    by_name = {row.split(",")[0]: row for row in rows}
    assert header == "name,n,total"
    assert by_name["requests"] == "requests,25,25.0"
    assert by_name["cpu"].startswith("cpu,25,")
    assert sorted(by_name) == ["cpu", "dev.statsd", "requests"] if statsd else ["cpu", "requests"]
    if statsd:
        assert by_name["dev.statsd"] == "dev.statsd,2,7.0"
    files = tmp_path / "data" / "files" / "dev" / "logs.jsonl"
    assert [json.loads(x)["payload"] for x in files.read_text().splitlines()] == lines


def test_dev_binds_its_ports_left_in_time_wait(tmp_path: Path) -> None:
    """The ports a previous run's servers closed connections on are in TIME-WAIT: `sluice dev`
    binds them as configured (before, it moved the worker and the metrics elsewhere, and
    `sluice query` then missed the worker)."""
    gateway, metrics, worker = time_wait_port(), time_wait_port(), time_wait_port()
    assert all(plain_bind_fails(port) for port in (gateway, metrics, worker))
    env = dev_env(tmp_path / "data", gateway, metrics, worker)
    dev = subprocess.Popen(SLUICE + ["dev"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = "".join(read_banner(dev))
        assert f"  gateway   127.0.0.1:{gateway} (plaintext)" in banner
        assert f"  worker    http://127.0.0.1:{worker}   log:" in banner
        assert f"  metrics   http://127.0.0.1:{metrics}/metrics\n" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{worker}/status", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
            assert b"sluice_gateway" in response.read()
        # chDB is the worker's while it runs: a query answers only through the worker's port.
        q = sluice(env, "query", "SELECT 1 AS one", "--format", "json")
        assert (q.returncode, json.loads(q.stdout or "null")) == (0, [{"one": 1}]), q.stderr
        token = (tmp_path / "data" / "dev-query-token").read_text()
        assert len(token) == 43 and (tmp_path / "data" / "dev-query-token").stat().st_mode & 0o777 == 0o600
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=120)
        assert dev.returncode == 0, out
    finally:
        if dev.poll() is None:
            dev.kill()
    # The worker had the token of the data directory; the next run keeps it.
    assert (tmp_path / "data" / "dev-query-token").read_text() == token


PORT_SETTINGS = ["SLUICE_GATEWAY_LISTEN", "SLUICE_GATEWAY_METRICS_LISTEN", "SLUICE_WORKER_WEB_PORT"]  # dev_env's order


@pytest.mark.parametrize("setting", PORT_SETTINGS)
def test_dev_stops_when_a_configured_port_is_taken(tmp_path: Path, setting: str) -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        ports = [port if name == setting else free_port() for name in PORT_SETTINGS]
        started = time.monotonic()
        dev = subprocess.Popen(
            SLUICE + ["dev"], env=dev_env(tmp_path / "data", *ports), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            out, err = dev.communicate(timeout=30)
        finally:
            if dev.poll() is None:
                dev.kill()
        elapsed = time.monotonic() - started
    assert (dev.returncode, out) == (1, "")
    assert err == (
        f"sluice: port {port} (127.0.0.1:{port}, {setting}) is taken: Address already in use "
        f"(hint: stop what listens there (another `sluice dev`?) or set {setting} to a free port)\n"
    )
    assert elapsed < 15
    # Nothing was started: no process is left in its session, no broker or child was logged.
    assert [p.pid for p in psutil.process_iter() if _session(p.pid) == dev.pid] == []
    assert not (tmp_path / "data").exists()


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
