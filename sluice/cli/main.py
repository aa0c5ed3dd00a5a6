"""The ``sluice`` command: dev, gateway, worker, send, query, dlq, keys, token."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from sluice.exceptions import SluiceError
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
    asyncio.run(run_gateway(settings))
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.streams.app import Worker

    _need_broker(settings, "worker")
    Worker(settings).run()
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.dev import run_dev

    return run_dev(settings, demo=args.demo)


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.send import run_send

    return run_send(settings, args)


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.query import run

    return run(settings, args)


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.dlq import run

    return run(settings, args)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.cli.output import print_rows
    from sluice.keys import AccessKeyConfig, JsonKeyStore, Limits, generate_access_key, validate_access_key

    store = JsonKeyStore(settings.access_keys_path)
    if args.keys_command == "add":
        key = validate_access_key(args.access_key or generate_access_key())
        if store.get(key) is not None:
            raise SluiceError(f"access key {key!r} exists already in {store.path}")
        config = store.put(
            AccessKeyConfig(
                access_key=key,
                enabled=not args.disabled,
                description=args.description,
                limits=Limits(bytes_per_second=args.bytes_per_second, events_per_second=args.events_per_second),
            )
        )
        print(config.access_key)
        return 0
    configs = store.list()
    if args.format == "json":
        print(json.dumps([c.model_dump(mode="json") for c in configs], indent=2))
        return 0
    print_rows(
        ["access_key", "enabled", "shards", "bytes/s", "events/s", "version", "description"],
        [
            [c.access_key, c.enabled, c.shards, c.limits.bytes_per_second, c.limits.events_per_second,
             c.version, c.description]
            for c in configs
        ],
        args.format,
    )
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.ingress.auth import issue_token
    from sluice.keys import JsonKeyStore

    if JsonKeyStore(settings.access_keys_path).get(args.access_key) is None:
        print(f"warning: {args.access_key!r} is not in {settings.access_keys_path}", file=sys.stderr)
    print(issue_token(settings.auth, args.access_key, args.ttl))
    return 0


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
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    add = keys_sub.add_parser("add", help="add an access key (a random one unless named)")
    add.add_argument("access_key", nargs="?")
    add.add_argument("--description", default="")
    add.add_argument("--disabled", action="store_true")
    add.add_argument("--bytes-per-second", type=int, default=0)
    add.add_argument("--events-per-second", type=int, default=0)
    lst = keys_sub.add_parser("list", help="list the access keys")
    lst.add_argument("--format", choices=["table", "json", "csv"], default="table")

    token = command("token", cmd_token, "issue access tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_sub.add_parser("issue", help="issue a JWT for an access key")
    issue.add_argument("--access-key", required=True)
    issue.add_argument("--ttl", type=duration, default=3600.0, help="lifetime, e.g. 15m, 1h, 7d (default 1h)")
    return parser


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
