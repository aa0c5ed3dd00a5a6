"""``sluice dlq list|replay``: the records the worker could not decode, and sending them back."""

from __future__ import annotations

import argparse
import asyncio

from sluice.exceptions import SluiceError
from sluice.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    lst = actions.add_parser("list", help="list the dead letters with their reason and source")
    lst.add_argument("--format", choices=["table", "json", "csv"], default="table")
    actions.add_parser("replay", help="send the dead letters not replayed yet back to the raw topic")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``sluice dlq``."""
    from sluice.cli.output import print_rows
    from sluice.streams.dlq import list_dead_letters, replay

    if not settings.kafka.bootstrap:
        raise SluiceError("`sluice dlq` needs SLUICE_KAFKA_BOOTSTRAP", hint="the broker the worker reads from")
    if args.dlq_command == "replay":
        sent = asyncio.run(replay(settings))
        print(f"replayed {len(sent)} record{'s' if len(sent) != 1 else ''} to {settings.kafka.raw_topic}")
        return 0
    letters = asyncio.run(list_dead_letters(settings))
    print_rows(
        ["partition", "offset", "key", "bytes", "source", "replayed", "reason"],
        [
            [d.partition, d.offset, (d.key or b"").decode("utf-8", "replace"), len(d.value), d.source, d.replayed,
             d.reason]
            for d in letters
        ],
        args.format,
    )
    return 0
