"""``sluice keys add|update|disable|list``: on the config topic when a broker is known
(SLUICE_KAFKA_BOOTSTRAP, or the one a running ``sluice dev`` recorded), else on the JSON seed
file that gateways load into the topic at start."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, get_args

from sluice.cli.broker import broker_for
from sluice.cli.output import print_rows
from sluice.cli.topics import add_top_arguments, run_top
from sluice.exceptions import SluiceError
from sluice.keys import AccessKeyConfig, JsonKeyStore, generate_access_key, validate_access_key
from sluice.keys.models import Sink, Stream
from sluice.keys.topic_store import ConfigTopicStore
from sluice.settings import Settings

# Options of add and update: flag name -> (dotted field, type).
LIMIT_OPTIONS = {
    "bytes_per_second": int, "bytes_burst": int, "events_per_second": int, "events_burst": int,
}


def add_arguments(sub: Any) -> None:
    """The ``keys`` actions and their options."""
    add = sub.add_parser("add", help="add an access key (a random one unless named)")
    add.add_argument("access_key", nargs="?")
    add.add_argument("--disabled", action="store_true")
    update = sub.add_parser("update", help="change an access key's configuration")
    update.add_argument("access_key")
    update.add_argument("--enable", action="store_true", help="enable a disabled key")
    for parser in (add, update):
        parser.add_argument("--description")
        parser.add_argument("--shards", type=int)
        parser.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=None)
        for name, kind in LIMIT_OPTIONS.items():
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind)
        parser.add_argument(
            "--route", action="append", type=_route, metavar="STREAM=SINKS",
            help="where a stream goes, e.g. metrics_1m=file,clickhouse or logs=none (repeatable); "
            f"streams: {', '.join(get_args(Stream))}; sinks: {', '.join(get_args(Sink))}",
        )
    disable = sub.add_parser("disable", help="disable an access key (its calls are refused within seconds)")
    disable.add_argument("access_key")
    lst = sub.add_parser("list", help="list the access keys")
    lst.add_argument("--format", choices=["table", "json", "csv"], default="table")
    add_top_arguments(sub.add_parser("top", help="per-key rates on the raw topic, and shards to give hot keys"))


def _changes(args: argparse.Namespace, old: AccessKeyConfig | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for field in ("description", "shards", "encrypt"):
        if getattr(args, field, None) is not None:
            changes[field] = getattr(args, field)
    limits = {n: getattr(args, n) for n in LIMIT_OPTIONS if getattr(args, n, None) is not None}
    if limits:
        changes["limits"] = (old.limits.model_dump() if old else {}) | limits
    if getattr(args, "route", None):
        changes["routes"] = (old.routes if old else {}) | dict(args.route)
    return changes


def _route(text: str) -> tuple[str, list[str]]:
    stream, sep, sinks = text.partition("=")
    if not sep or stream not in get_args(Stream):
        raise argparse.ArgumentTypeError(f"expected STREAM=SINKS with STREAM one of {', '.join(get_args(Stream))}, got {text!r}")
    names = [] if sinks == "none" else [s.strip() for s in sinks.split(",")]
    unknown = [n for n in names if n not in get_args(Sink)]
    if unknown or not names and sinks != "none":
        raise argparse.ArgumentTypeError(
            f"unknown sink(s) {', '.join(unknown) or repr(sinks)} in {text!r}: use {', '.join(get_args(Sink))} or none"
        )
    return stream, names


class _Seed:
    """The JSON seed file with the topic store's async interface."""

    def __init__(self, path: Path) -> None:
        self.store = JsonKeyStore(path)
        self.where = str(path)

    def get(self, key: str) -> AccessKeyConfig | None:
        return self.store.get(key)

    def list(self) -> list[AccessKeyConfig]:
        return self.store.list()

    async def put(self, config: AccessKeyConfig) -> AccessKeyConfig:
        return self.store.put(config)


async def _run(store: ConfigTopicStore | _Seed, where: str, args: argparse.Namespace) -> int:
    action = args.keys_command
    if action == "list":
        configs = store.list()
        if args.format == "json":
            print(json.dumps([c.model_dump(mode="json") for c in configs], indent=2))
        else:
            print_rows(
                ["access_key", "enabled", "shards", "bytes/s", "events/s", "version", "description"],
                [[c.access_key, c.enabled, c.shards, c.limits.bytes_per_second, c.limits.events_per_second,
                  c.version, c.description] for c in configs],
                args.format,
            )
        return 0
    key = validate_access_key(args.access_key or generate_access_key())
    old = store.get(key)
    if action == "add":
        if old is not None:
            raise SluiceError(f"access key {key!r} exists already in {where}")
        config = AccessKeyConfig.model_validate({"access_key": key, "enabled": not args.disabled} | _changes(args, None))
    else:
        if old is None:
            raise SluiceError(f"no access key {key!r} in {where}", hint="list them with `sluice keys list`")
        changes = {"enabled": False} if action == "disable" else _changes(args, old)
        if action == "update" and args.enable:
            changes["enabled"] = True
        config = AccessKeyConfig.model_validate(old.model_dump() | changes)
    stored = await store.put(config)
    print(stored.access_key if action == "add" else f"{stored.access_key}: version {stored.version}")
    return 0


def known(settings: Settings, access_key: str) -> tuple[bool, str]:
    """Whether the key exists (on the topic when a broker is known, else in the seed), and where."""
    broker = broker_for(settings)
    if not broker:
        return JsonKeyStore(settings.access_keys_path).get(access_key) is not None, str(settings.access_keys_path)

    async def look() -> bool:
        async with ConfigTopicStore(broker, settings.kafka.config_topic) as store:
            return store.get(access_key) is not None

    return asyncio.run(look()), f"topic {settings.kafka.config_topic!r} at {broker}"


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    if args.keys_command == "top":
        return run_top(settings, args)
    broker = broker_for(settings)
    if not broker:
        return asyncio.run(_run(_Seed(settings.access_keys_path), str(settings.access_keys_path), args))

    async def on_topic() -> int:
        async with ConfigTopicStore(broker, settings.kafka.config_topic) as store:
            return await _run(store, f"topic {settings.kafka.config_topic!r} at {broker}", args)

    return asyncio.run(on_topic())
