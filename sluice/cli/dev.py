"""``sluice dev``: the whole pipeline on one machine with nothing to set up.

Tansu (memory storage) unless SLUICE_KAFKA_BOOTSTRAP names a broker, then the gateway and one
worker as child processes (logs in <data_dir>/*.log), chDB in <data_dir>/clickhouse. Ctrl-C
stops the gateway first, waits until the worker has processed every acknowledged record and
closed every window, then stops the worker and the broker: nothing acknowledged is lost.
Every listener gets the port it is configured with (a port left in TIME-WAIT included); a taken
one stops `sluice dev` before anything starts. The worker's admin query token is kept, 0600,
in <data_dir>/dev-query-token.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import SecretStr

from sluice.cli.broker import dev_broker_path
from sluice.cli.dev_ports import bind_error, check_listeners
from sluice.certs import DEFAULT_HOSTNAMES, generate_self_signed, issue_client_cert
from sluice.client import SluiceClient, counter_envelope, gauge_envelope, log_envelope
from sluice.client.tls import tls_credentials
from sluice.exceptions import SluiceError
from sluice.ingress.auth import issue_token
from sluice.ingress.server import parse_listen
from sluice.keys import AccessKeyConfig, JsonKeyStore
from sluice.settings import Settings
from sluice.streams.query import DEV_QUERY_TOKEN_FILE, wait_caught_up, worker_url
from sluice.tansu import Tansu, wait_for_port

DEV_KEY = "dev"


def dev_credential(path: Path) -> str:
    """The random credential (32 random bytes, URL-safe) kept in ``path``, made on first use;
    the file is created 0600, so it is never readable by others, not even briefly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def dev_secret(data_dir: Path) -> str:
    """The JWT secret of this data directory (in dev-secret)."""
    return dev_credential(data_dir / "dev-secret")


def dev_query_token(data_dir: Path) -> str:
    """The worker's admin query token of this data directory (in dev-query-token)."""
    return dev_credential(data_dir / DEV_QUERY_TOKEN_FILE)


class Child:
    """A `sluice` subcommand in its own session (so Ctrl-C reaches only `sluice dev`)."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.cli.main", name],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise SluiceError(
                f"the {self.name} exited with status {self.proc.returncode}; its log ends:\n  "
                + "\n  ".join(tail),
                hint=f"full log: {self.log_path}",
            )

    def stop(self, timeout: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  the {self.name} did not stop within {timeout:g}s; killing it")
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def demo_load(client: SluiceClient) -> None:
    """Every second: 10 log lines, 100 counter increments and a gauge reading."""
    lines = 0
    while True:
        batch = [log_envelope(f"demo line {lines + i}", source_id="demo") for i in range(10)]
        lines += 10
        batch += [counter_envelope("demo.requests", 1, source_id="demo", tags={"route": "/"}) for _ in range(100)]
        batch.append(gauge_envelope({"demo.cpu": (42.0, "%")}, source_id="demo"))
        try:
            await client.send(batch)
        except SluiceError as exc:
            print(f"  demo: send failed: {exc}")
        await asyncio.sleep(1)


def dev_tls(settings: Settings, *, mtls: bool) -> dict[str, Path]:
    """Serve TLS (mutual TLS with ``mtls``) with certificates of a CA kept in <data_dir>/tls/;
    the ``sluice send`` options (--ca-file, --cert-file, --key-file) that connect to it.

    Certificates named by SLUICE_TLS_* are used as they are: the options are then the user's.
    """
    tls = settings.tls
    if tls.cert_file is not None:
        return {}
    host = parse_listen(settings.gateway.listen)[0].strip("[]")
    hosts = list(DEFAULT_HOSTNAMES) + ([host] if host not in (*DEFAULT_HOSTNAMES, "0.0.0.0", "::") else [])
    files = generate_self_signed(settings.data_dir / "tls", hosts)
    tls.cert_file, tls.key_file = files.server_cert, files.server_key
    options = {"--ca-file": files.ca_cert}
    if mtls:
        tls.client_ca_file = files.ca_cert
        options["--cert-file"], options["--key-file"] = issue_client_cert(files, "dev-client")
    return options


# The usual ports of the protocols, turned on in dev when free (statsd and Influx UDP as the dev key).
DEV_PROTOCOLS = {"statsd_listen": 8125, "influx_udp_listen": 8094, "http_listen": 8086, "otlp_http_listen": 4318}


def enable_protocols(settings: Settings, reserved: set[int]) -> None:
    """Turn on the protocol listeners not configured whose usual port is free and not
    ``reserved`` (named by another listener)."""
    protocols = settings.protocols
    for name, port in DEV_PROTOCOLS.items():
        udp = name in ("statsd_listen", "influx_udp_listen")
        if getattr(protocols, name) or port in reserved or bind_error("127.0.0.1", port, udp=udp) is not None:
            continue
        setattr(protocols, name, f"127.0.0.1:{port}")
        if name == "statsd_listen":
            protocols.statsd_access_key = protocols.statsd_access_key or DEV_KEY
        elif name == "influx_udp_listen":
            protocols.influx_udp_access_key = protocols.influx_udp_access_key or DEV_KEY


def protocol_lines(settings: Settings) -> str:
    p = settings.protocols
    parts = [f"OTLP/gRPC on {settings.gateway.listen}"]
    parts += [f"statsd udp://{p.statsd_listen}"] if p.statsd_listen else []
    parts += [f"Influx udp://{p.influx_udp_listen}"] if p.influx_udp_listen else []
    parts += [f"Influx, remote write, OTLP/HTTP and Loki push http://{p.http_listen}"] if p.http_listen else []
    parts += [f"OTLP/HTTP and Loki push http://{p.otlp_http_listen}"] if p.otlp_http_listen else []
    return ", ".join(parts)


def otlp_http_example(settings: Settings, token: str) -> str:
    """The environment that points an OpenTelemetry SDK at the OTLP/HTTP listener, or nothing."""
    address = settings.protocols.otlp_http_listen or settings.protocols.http_listen
    if not address:
        return ""
    return ("\nPoint an OpenTelemetry SDK (OTLP/HTTP) at it:\n  OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
            f"OTEL_EXPORTER_OTLP_ENDPOINT=http://{address} OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20{token}\n")


def run_dev(settings: Settings, *, demo: bool = False, tls: bool = False, mtls: bool = False) -> int:
    """Run the stack until Ctrl-C; ``tls``/``mtls`` serve the gateway with (mutual) TLS.

    Every listener binds the port it is configured with; one that is taken stops ``sluice dev``
    before anything starts. Only the broker's port (embedded Tansu) is picked free.
    """
    listeners = check_listeners(settings)
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    settings.keys_file = settings.access_keys_path.resolve()
    settings.data_dir = data
    tls_options = dev_tls(settings, mtls=mtls) if tls or mtls else {}
    if settings.auth.jwt_secret is None and settings.auth.algorithms[0].startswith("HS"):
        settings.auth.jwt_secret = SecretStr(dev_secret(data))
    keys = JsonKeyStore(settings.access_keys_path)
    if keys.get(DEV_KEY) is None:
        keys.put(AccessKeyConfig(access_key=DEV_KEY, description="made by sluice dev"))
    if settings.query.admin_token is None:
        settings.query.admin_token = SecretStr(dev_query_token(data))
    enable_protocols(settings, {listener.port for listener in listeners})
    tansu = None
    children: list[Child] = []
    try:
        if not settings.kafka.bootstrap:
            tansu = Tansu(binary=settings.tansu_bin, log_path=data / "tansu.log").start()
            settings.kafka.bootstrap = tansu.bootstrap
        env = dict(os.environ) | settings.to_env()
        dev_broker_path(settings).write_text(settings.kafka.bootstrap)
        children.append(Child("gateway", env, data / "gateway.log"))
        children.append(Child("worker", env, data / "worker.log"))
        return asyncio.run(_serve(settings, children, tansu, demo, tls_options))
    finally:
        for child in reversed(children):
            child.stop(30)
        dev_broker_path(settings).unlink(missing_ok=True)
        if tansu is not None:
            tansu.stop()


async def _serve(
    settings: Settings, children: list[Child], tansu: Tansu | None, demo: bool, tls_options: dict[str, Path]
) -> int:
    gateway, worker = children
    host, port = parse_listen(settings.gateway.listen)
    url = worker_url(settings)
    web_host, web_port = url.rsplit("/", 1)[1].rsplit(":", 1)
    for child, (h, p) in ((gateway, (host.strip("[]"), port)), (worker, (web_host, int(web_port)))):
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(wait_for_port, h, p, 0.5):
            child.check()
            if time.monotonic() > deadline:
                raise SluiceError(f"the {child.name} did not listen on {h}:{p} within 60s", hint=f"see {child.log_path}")
    token = issue_token(settings.auth, DEV_KEY, 24 * 3600)
    target = settings.gateway.listen
    tls = settings.tls
    transport = "plaintext" if tls.cert_file is None else "mutual TLS" if tls.client_ca_file else "TLS"
    if tls_options:
        credentials = tls_credentials(
            tls_options["--ca-file"], tls_options.get("--cert-file"), tls_options.get("--key-file")
        )
    elif tls.cert_file is not None:  # the user's certificates: the demo trusts the chain served
        credentials = tls_credentials(tls.cert_file)
        tls_options = {"--ca-file": Path("<CA that signed the gateway's certificate>")}
    else:
        credentials = None
    send_options = "".join(f" {option} {path}" for option, path in tls_options.items())
    console = f"  console   {url}/console/\n" if settings.worker.console else ""
    print(f"""
Sluice is running.
  broker    {settings.kafka.bootstrap}{' (Tansu, memory storage)' if tansu else ''}
  gateway   {target} ({transport})  log: {gateway.log_path}
  worker    {url}   log: {worker.log_path}
{console}  query     {url}/query  (raw SQL needs the admin token: SLUICE_QUERY_ADMIN_TOKEN, else {settings.data_dir / DEV_QUERY_TOKEN_FILE})
  data      {settings.data_dir.resolve()}  (files in files/, chDB in clickhouse/)
  key       {DEV_KEY}
  token     {token}
  protocols {protocol_lines(settings)}
  metrics   {f"http://{settings.gateway.metrics_listen}/metrics" if settings.gateway.metrics_listen else "off"}

Manage keys (this data dir's commands find the broker by themselves):
  sluice keys add tenant-a && sluice token issue --access-key tenant-a

Send, then query:
  echo hello | sluice send --target {target} --access-key {DEV_KEY} --token {token}{send_options}
  sluice query "SELECT timestamp, payload FROM sluice.logs FINAL ORDER BY timestamp DESC LIMIT 10"
{otlp_http_example(settings, token)}
Ctrl-C stops everything; what was acknowledged is written before it stops.
""", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    async with SluiceClient(target, DEV_KEY, token, credentials=credentials) as client:
        load = asyncio.ensure_future(demo_load(client)) if demo else None
        while not stopping.is_set():
            for child in children:
                child.check()
            try:
                await asyncio.wait_for(stopping.wait(), 1)
            except TimeoutError:
                pass
        if load is not None:
            load.cancel()
    print("stopping: gateway first, then the worker once it has caught up", flush=True)
    gateway.stop(30)
    if not await wait_caught_up(settings, url, 60):
        print("  warning: the worker did not catch up within 60s; unprocessed records stay in the broker")
    return 0
