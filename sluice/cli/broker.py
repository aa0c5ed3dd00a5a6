"""Which Kafka broker a command talks to: the configured one, else a running ``sluice dev``'s."""

from __future__ import annotations

from pathlib import Path

from sluice.settings import Settings

DEV_BROKER_FILE = "dev-broker"


def dev_broker_path(settings: Settings) -> Path:
    """Where a running ``sluice dev`` writes the address of its embedded broker."""
    return settings.data_dir / DEV_BROKER_FILE


def broker_for(settings: Settings) -> str:
    """The configured broker, else the one a running ``sluice dev`` on this data dir uses, else ''."""
    if settings.kafka.bootstrap:
        return settings.kafka.bootstrap
    path = dev_broker_path(settings)
    return path.read_text().strip() if path.exists() else ""
