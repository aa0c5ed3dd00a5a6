"""The ``sluice`` command: dev, gateway, worker, send, query, dlq, keys, topics, audit, plan, token, bench."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from sluice.exceptions import SluiceError
from sluice.runtime import WORKER_GC_MIDDLE, tune_process
from sluice.settings import Settings, load_settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h`` or ``7d``."""
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 15m, 1h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _need_broker(settings: Settings, what: str) -> None:
    if not settings.kafka.bootstrap:
        raise SluiceError(
            f"`sluice {what}` needs a Kafka broker but SLUICE_KAFKA_BOOTSTRAP is not set",
            hint="set it to host:port, or run everything here with `sluice dev`",
        )


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.ingress import run_gateway

    _need_broker(settings, "gateway")
    _setup_logging(settings)
    tune_process(settings)
    asyncio.run(run_gateway(settings))
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.streams.app import Worker

    _need_broker(settings, "worker")
    worker = Worker(settings)
    tune_process(settings, middle=WORKER_GC_MIDDLE)
    worker.run()
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.dev import run_dev

    return run_dev(settings, demo=args.demo, tls=args.tls or args.mtls, mtls=args.mtls)


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.send import run_send

    if args.follow:  # a long-running agent: say when it retries
        _setup_logging(settings)
    return run_send(settings, args)


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.query import run

    return run(settings, args)


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.dlq import run

    return run(settings, args)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.keys import run_keys

    return run_keys(settings, args)


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.topics import run_topics

    return run_topics(settings, args)


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.output import print_rows
    from sluice.streams.audit import audit
    from sluice.streams.query import run_query

    windows = audit(settings, args.key, args.since, lambda sql: run_query(settings, sql))
    rows = [
        [time.strftime("%Y-%m-%d %H:%M", time.gmtime(w.minute)),
         *(w.expected.get(m, 0) for m in ("logs", "events", "points")),
         "ok" if not w.differs else "; ".join(w.differs)]
        for w in windows
    ]
    print_rows(["window (UTC)", "logs", "events", "points", "verdict"], rows, args.format)
    bad = sum(1 for w in windows if w.differs)
    if bad:
        print(f"{bad} of {len(windows)} window(s) differ from what the gateway acknowledged "
              "(logs and events over a key's events_per_second are dropped on purpose: see the "
              "worker's /status throttled counts)", file=sys.stderr)
    return 1 if bad else 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.keys import known
    from sluice.ingress.auth import issue_token

    try:
        token = issue_token(settings.auth, args.access_key, args.ttl)
    except ValueError as exc:
        raise SluiceError(str(exc)) from exc
    found, where = known(settings, args.access_key)
    if not found:
        print(f"warning: {args.access_key!r} is not in {where}", file=sys.stderr)
    print(token)
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    # The benchmarks live in bench/ of the source tree, next to this package; not installed.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.runner import main as run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Telemetry ingestion: gRPC gateway -> Kafka -> Faust workers -> files and ClickHouse. "
        "Settings come from SLUICE_* variables and the TOML file named by SLUICE_CONFIG.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[[Settings, argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        return p

    dev = command("dev", cmd_dev, "run Tansu, the gateway, a worker and chDB on this machine")
    dev.add_argument("--demo", action="store_true", help="also send a small synthetic load")
    dev.add_argument(
        "--tls", action="store_true",
        help="serve TLS with a certificate from a CA made once under <data_dir>/tls/ (unless SLUICE_TLS_CERT_FILE is set)",
    )
    dev.add_argument("--mtls", action="store_true", help="like --tls, and require client certificates of that CA")
    command("gateway", cmd_gateway, "serve the gRPC gateway")
    command("worker", cmd_worker, "run a Faust worker")

    send = command("send", cmd_send, "send log lines (from FILE or stdin) or synthetic metrics")
    send.add_argument("file", nargs="?", help="file of log lines; default: standard input")
    send.add_argument("--access-key", required=True)
    send.add_argument("--token", required=True)
    send.add_argument("--target", help="gateway host:port (default: gateway.listen)")
    send.add_argument("--metrics", type=int, metavar="N", help="send N synthetic counter and gauge envelopes instead")
    send.add_argument("--batch", type=int, default=500, help="envelopes per batch (default 500)")
    send.add_argument("--source-id", default="", help="source_id of the envelopes (default: the access key)")
    send.add_argument(
        "--follow", action="store_true",
        help="keep sending the lines appended to FILE (across rotation) until SIGINT or SIGTERM",
    )
    send.add_argument("--state", metavar="PATH", help="--follow: position file (default: FILE.sluice-pos)")
    send.add_argument(
        "--retry-for", type=duration, metavar="DURATION",
        help="retry an unavailable or overloaded gateway this long, e.g. 5m (default: 1m; --follow: for ever)",
    )
    send.add_argument("--ca-file", type=Path, help="connect with TLS, trusting this PEM CA bundle")
    send.add_argument("--cert-file", type=Path, help="PEM client certificate, for gateways requiring mutual TLS")
    send.add_argument("--key-file", type=Path, help="PEM private key of --cert-file")

    query = command(
        "query", cmd_query,
        "one key's metrics, logs or events (`sluice query metrics --key K --name N`, "
        "`sluice query logs --key K --grep TEXT`), or a read-only SQL query (`sluice query [sql] SQL`)",
    )
    from sluice.cli.query import add_arguments as add_query_arguments

    add_query_arguments(query, duration)

    from sluice.cli.dlq import add_arguments as add_dlq_arguments

    add_dlq_arguments(command("dlq", cmd_dlq, "list the dead-letter topic, or replay it to the raw topic"))

    keys = command("keys", cmd_keys, "manage access keys")
    from sluice.cli.keys import add_arguments

    add_arguments(keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION"))
    from sluice.cli.topics import add_arguments as add_topic_arguments

    add_topic_arguments(command("topics", cmd_topics, "manage the raw topic's partitions"))

    audit = command("audit", cmd_audit, "reconcile a key's 1m windows: the raw topic vs ClickHouse and the files")
    audit.add_argument("--key", required=True)
    audit.add_argument("--since", type=duration, default=3600.0, help="how far back, e.g. 15m, 1h (default 1h)")
    audit.add_argument("--format", choices=["table", "json", "csv"], default="table")

    bench = command("bench", cmd_bench, "run side-by-side benchmarks (from a source checkout); writes bench/RESULTS.md")
    bench.add_argument("scenario", nargs="*", metavar="SCENARIO", help="gateway, worker, clickhouse, e2e (default: all)")
    bench.add_argument("--quick", action="store_true", help="tiny loads: check that the benchmark code works")
    bench.add_argument("--output", type=Path, help="results file (default: bench/RESULTS.md for a full run of all)")
    bench.add_argument("--workdir", type=Path, help="keep logs and data here (default: a temporary directory)")
    bench.add_argument("--profile", type=Path, metavar="DIR", help="record py-spy profiles of every process under test into DIR")
    bench.add_argument("--profile-gil", action="store_true",
                       help="with --profile: sample only the thread holding the GIL (where the interpreter's time goes, no waits)")

    from sluice.cli.plan import add_arguments as add_plan_arguments

    add_plan_arguments(command(
        "plan", cmd_plan,
        "size a deployment for a load: gateways, workers, partitions, Kafka brokers, ClickHouse shards",
    ), duration)

    token = command("token", cmd_token, "issue access tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_sub.add_parser("issue", help="issue a JWT for an access key")
    issue.add_argument("--access-key", required=True)
    issue.add_argument("--ttl", type=duration, default=3600.0, help="lifetime, e.g. 15m, 1h, 7d (default 1h)")
    return parser


def cmd_plan(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.plan import run

    return run(settings, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"sluice: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(settings, args))
    except SluiceError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
