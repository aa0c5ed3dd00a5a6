"""Channel credentials for a gateway serving TLS (and mutual TLS)."""

from __future__ import annotations

from pathlib import Path

import grpc

from sluice.exceptions import ConfigurationError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def tls_credentials(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting ``ca_file`` (the system's CAs when None), presenting the client
    certificate ``cert_file``/``key_file`` for mutual TLS; None (plaintext) when nothing is given."""
    if (cert_file is None) != (key_file is None):
        raise ConfigurationError("a client certificate needs both its certificate and its key file")
    if ca_file is None and cert_file is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca_file is None else _read(ca_file, "CA file"),
        private_key=None if key_file is None else _read(key_file, "client key file"),
        certificate_chain=None if cert_file is None else _read(cert_file, "client certificate file"),
    )
