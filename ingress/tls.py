"""Server-side TLS of the gateway from :class:`TlsSettings`: TLS when a certificate is set,
mutual TLS (clients must present a certificate the client CA signed) when a client CA is set.

The files are read and checked when the gateway is built, so a missing, unreadable, expired
or mismatched file is a :class:`ConfigurationError` naming the setting, not a failed handshake.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from sluice.exceptions import ConfigurationError
from sluice.settings import TlsSettings


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read tls.{setting} {path}: {exc.strerror}") from exc


def _certificates(data: bytes, path: Path, setting: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"tls.{setting} {path} holds no PEM certificate") from exc
    now = datetime.datetime.now(datetime.timezone.utc)
    for certificate in certificates:
        if certificate.not_valid_after_utc < now:
            raise ConfigurationError(
                f"tls.{setting} {path}: the certificate for {certificate.subject.rfc4514_string()} "
                f"expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
    return certificates


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """The credentials the gateway's port is bound with; None (plaintext) without ``cert_file``."""
    if tls.cert_file is None:
        if tls.key_file is not None or tls.client_ca_file is not None:
            raise ConfigurationError(
                "tls.key_file or tls.client_ca_file is set but tls.cert_file is not",
                hint="set SLUICE_TLS_CERT_FILE to the server's PEM certificate chain",
            )
        return None
    if tls.key_file is None:
        raise ConfigurationError(
            "tls.cert_file is set but tls.key_file is not", hint="set SLUICE_TLS_KEY_FILE to its PEM private key"
        )
    chain = _read(tls.cert_file, "cert_file")
    key_pem = _read(tls.key_file, "key_file")
    certificates = _certificates(chain, tls.cert_file, "cert_file")
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"tls.key_file {tls.key_file} is not an unencrypted PEM private key") from exc
    spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificates[0].public_key().public_bytes(*spki):
        raise ConfigurationError(
            f"tls.key_file {tls.key_file} is not the key of the certificate in tls.cert_file {tls.cert_file}"
        )
    client_ca = None
    if tls.client_ca_file is not None:
        client_ca = _read(tls.client_ca_file, "client_ca_file")
        _certificates(client_ca, tls.client_ca_file, "client_ca_file")
    return grpc.ssl_server_credentials(
        [(key_pem, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
