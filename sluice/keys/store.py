"""Where access-key configurations are kept.

:class:`AccessKeyStore` is the interface the gateway and the worker use. :class:`JsonKeyStore`
keeps the keys in a JSON file (``{"<key>": {config}, ...}``), reloaded when the file changes,
so ``sluice keys add`` takes effect on a running gateway.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from sluice.keys.exceptions import KeyStoreCorrupt, UnknownAccessKey
from sluice.keys.models import AccessKeyConfig


class AccessKeyStore(Protocol):
    """Looks up access-key configurations."""

    def get(self, access_key: str) -> AccessKeyConfig | None:
        """The key's configuration, or None when the key does not exist."""
        ...

    def list(self) -> list[AccessKeyConfig]:
        """Every key, sorted by name."""
        ...


def generate_access_key() -> str:
    """A new random access key."""
    return "ak_" + secrets.token_hex(12)


class JsonKeyStore:
    """Access keys in a JSON file, re-read at most every ``reload_interval`` seconds if changed."""

    def __init__(self, path: Path, *, reload_interval: float = 1.0) -> None:
        if reload_interval <= 0:
            raise ValueError(f"reload_interval must be > 0, got {reload_interval}")
        self.path = Path(path)
        self.reload_interval = reload_interval
        self._keys: dict[str, AccessKeyConfig] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._reload()

    def get(self, access_key: str) -> AccessKeyConfig | None:
        self._maybe_reload()
        return self._keys.get(access_key)

    def list(self) -> list[AccessKeyConfig]:
        self._maybe_reload()
        return [self._keys[k] for k in sorted(self._keys)]

    def put(self, config: AccessKeyConfig) -> AccessKeyConfig:
        """Add or replace a key; its version goes up by one when it existed."""
        self._reload()
        old = self._keys.get(config.access_key)
        if old is not None:
            config = config.model_copy(update={"version": old.version + 1})
        self._keys[config.access_key] = config
        self._write()
        return config

    def update(self, access_key: str, **changes: object) -> AccessKeyConfig:
        """Change some fields of an existing key."""
        self._reload()
        old = self._keys.get(access_key)
        if old is None:
            raise UnknownAccessKey(f"no access key {access_key!r} in {self.path}")
        merged = old.model_dump() | changes
        return self.put(AccessKeyConfig.model_validate(merged))

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= self.reload_interval:
            self._reload()

    def _reload(self) -> None:
        self._checked = time.monotonic()
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            raw = json.loads(self.path.read_text())
            if not isinstance(raw, dict):
                raise TypeError("top level is not an object")
            keys = {
                k: AccessKeyConfig.model_validate({**v, "access_key": k}) for k, v in raw.items()
            }
        except (OSError, ValueError, TypeError, ValidationError) as exc:
            raise KeyStoreCorrupt(
                f"cannot read access keys from {self.path}: {exc}",
                hint='the file must be a JSON object {"<access key>": {"enabled": true, ...}}',
            ) from exc
        self._keys, self._stamp = keys, stamp

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            k: c.model_dump(mode="json", exclude={"access_key"}) for k, c in sorted(self._keys.items())
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._stamp = None
        self._reload()
