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
from pathlib import Path

from sluice.tansu import free_port

SLUICE = [sys.executable, "-m", "sluice.cli.main"]


def sluice(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SLUICE + list(args), env=env, input=input, capture_output=True, text=True, timeout=120)


def test_dev_send_query_and_ctrl_c(tmp_path: Path) -> None:
    gateway = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env |= {
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        "SLUICE_GATEWAY_LISTEN": gateway,
        "SLUICE_GATEWAY_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "SLUICE_WORKER_WEB_PORT": str(free_port()),
    }
    dev = subprocess.Popen(SLUICE + ["dev"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner: list[str] = []
        assert dev.stdout is not None
        deadline = time.monotonic() + 120
        while not any(line.startswith("Ctrl-C stops everything") for line in banner):
            line = dev.stdout.readline()
            assert line and time.monotonic() < deadline, "sluice dev did not start:\n" + "".join(banner)
            banner.append(line)
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
