"""A real ``sluice gateway`` process with every protocol listener on, for tests that need the
process itself: its log, its RSS, its behaviour under abuse."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from sluice.ingress import issue_token
from sluice.keys import AccessKeyConfig, JsonKeyStore
from sluice.settings import Settings
from sluice.tansu import Tansu, free_port, wait_for_port
from sluice.v1.envelope_pb2 import Envelope
from tests.integration.gateway_helpers import MetricSamples, batch_of, read_topic, scrape


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


class GatewayProcess:
    """A ``sluice gateway`` process and how to reach it."""

    def __init__(self, settings: Settings, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.settings, self.proc, self.log = settings, proc, log
        self.http = f"http://{settings.protocols.http_listen}"
        self.http_port = port_of(settings.protocols.http_listen)
        self.grpc = settings.gateway.listen
        self.statsd = port_of(settings.protocols.statsd_listen)
        self.influx_udp = port_of(settings.protocols.influx_udp_listen)
        self.metrics = port_of(settings.gateway.metrics_listen)

    def token(self, key: str) -> str:
        return issue_token(self.settings.auth, key, 600)

    def post(self, path: str, body: bytes, headers: Mapping[str, str], timeout: float = 10) -> tuple[int, bytes]:
        request = urllib.request.Request(self.http + path, data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:  # a hang fails the test
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def samples(self) -> MetricSamples:
        return scrape(self.metrics)

    def counter(self, name: str, **labels: str) -> float:
        """The sum of ``sluice_gateway_<name>_total`` over the series matching ``labels``."""
        return sum(v for (n, series), v in self.samples().items()
                   if n == f"sluice_gateway_{name}_total" and labels.items() <= dict(series).items())

    def rss(self) -> int:
        """The process's resident set size, in bytes."""
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def envelopes_of(self, key: str) -> list[Envelope]:
        records = asyncio.run(read_topic(self.settings.kafka.bootstrap, self.settings.kafka.raw_topic))
        return [env for r in records if r.key == key.encode() for env in batch_of(r)]


@contextmanager
def gateway_process(
    tansu: Tansu, data: Path, keys: list[str], *, protocols: Mapping[str, Any] = {}, **sections: Any
) -> Iterator[GatewayProcess]:
    """Run ``sluice gateway`` with every listener on (``protocols`` and the other ``sections``
    override settings) and ``keys`` known; on exit it must stop cleanly, its log free of tracebacks."""
    unique = os.urandom(5).hex()
    settings = Settings(
        data_dir=data,
        kafka={"bootstrap": tansu.bootstrap, "raw_topic": f"sluice.raw.{unique}",
               "config_topic": f"sluice.config.{unique}", "partitions": 2},
        auth={"jwt_secret": "process-secret-" + os.urandom(32).hex()},
        gateway={"listen": f"127.0.0.1:{free_port()}", "metrics_listen": f"127.0.0.1:{free_port()}"},
        protocols={
            "statsd_listen": f"127.0.0.1:{free_port()}", "statsd_access_key": keys[0],
            "influx_udp_listen": f"127.0.0.1:{free_port()}", "influx_udp_access_key": keys[0],
            "http_listen": f"127.0.0.1:{free_port()}", **protocols,
        },
        **{"metrics_key_labels": True, **sections},  # the tests account per key
    )
    store = JsonKeyStore(settings.access_keys_path)
    for key in keys:
        store.put(AccessKeyConfig(access_key=key))
    log_path = data / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sluice.cli.main", "gateway"],
                                env=dict(os.environ) | settings.to_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        for port in (port_of(settings.protocols.http_listen), port_of(settings.gateway.listen)):
            assert wait_for_port("127.0.0.1", port, 30), log_path.read_text()
        yield GatewayProcess(settings, proc, log_path)
        assert proc.poll() is None, "the gateway died"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text(errors="replace")[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
