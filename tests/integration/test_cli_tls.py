"""`sluice dev --mtls` and `sluice send` with client certificates, as a user runs them: the
command printed by `sluice dev` connects; without a client certificate, or in plaintext, the
connection is refused."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from sluice.tansu import free_port
from tests.integration.test_cli import SLUICE, sluice


def test_dev_with_mutual_tls(tmp_path: Path) -> None:
    gateway = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env |= {
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        "SLUICE_GATEWAY_LISTEN": gateway,
        "SLUICE_GATEWAY_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "SLUICE_WORKER_WEB_PORT": str(free_port()),
    }
    dev = subprocess.Popen(
        SLUICE + ["dev", "--mtls"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        banner: list[str] = []
        assert dev.stdout is not None
        deadline = time.monotonic() + 120
        while not any(line.startswith("Ctrl-C stops everything") for line in banner):
            line = dev.stdout.readline()
            assert line and time.monotonic() < deadline, "sluice dev did not start:\n" + "".join(banner)
            banner.append(line)
        assert f"  gateway   {gateway} (mutual TLS)" in "".join(banner)
        command = next(line for line in banner if "sluice send" in line).split("sluice send", 1)[1]
        args = shlex.split(command)
        tls_dir = tmp_path / "data" / "tls"
        assert args[-6:] == [
            "--ca-file", str(tls_dir / "ca.pem"),
            "--cert-file", str(tls_dir / "dev-client.pem"),
            "--key-file", str(tls_dir / "dev-client.key"),
        ]
        assert sorted(p.name for p in tls_dir.iterdir()) == [
            "ca.key", "ca.pem", "dev-client.key", "dev-client.pem", "server.key", "server.pem"
        ]

        sent = sluice(env, "send", *args, input="one\ntwo\n")
        assert (sent.returncode, sent.stdout) == (0, "acknowledged 2 of 2 envelopes\n"), sent.stderr
        for refused_args in (args[:-4], args[:-6]):  # no client certificate; plaintext
            refused = sluice(env, "send", *refused_args, "--retry-for", "1s", input="x\n")
            assert refused.returncode == 1
            assert refused.stderr.startswith("sluice send: UNAVAILABLE: failed to connect to all addresses"), refused.stderr
            assert refused.stderr.endswith("an unknown number of 1 envelopes were acknowledged\n"), refused.stderr
        missing = sluice(env, "send", *args[:-2], input="x\n")
        assert (missing.returncode, missing.stderr) == (
            1, "sluice: a client certificate needs both its certificate and its key file\n"
        )

        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=120)
        assert dev.returncode == 0, out
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
