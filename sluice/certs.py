"""Certificates for development and tests: a private CA, a server certificate it signed for
the given host names and IP addresses, and client certificates for mutual TLS.

Keys are ECDSA P-256 (fast to make, accepted by gRPC) and written 0600. Not for production:
use certificates from your own PKI there.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files :func:`generate_self_signed` made (or found) in one directory."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )


def _leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, subject: str, usage: x509.ObjectIdentifier,
    days: int, hostnames: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _certificate(subject, key, ca, ca_key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hostnames:
        builder = builder.add_extension(_san(hostnames), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _load(files: TlsFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key} is not an EC private key")
    return ca, key


def _covers(path: Path, hostnames: Sequence[str]) -> bool:
    """Whether the certificate at ``path`` names every host and is valid for another day."""
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    tomorrow = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    try:
        names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return False
    return set(_san(hostnames)) <= names and cert.not_valid_after_utc > tomorrow


def _new_ca(files: TlsFiles, days: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        _certificate("Sluice development CA", key, None, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(files.ca_key, key)
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))


def generate_self_signed(
    directory: Path, hostnames: Sequence[str] = DEFAULT_HOSTNAMES, *, days: int = 365
) -> TlsFiles:
    """A CA (``ca.pem``/``ca.key``) and a server certificate it signed (``server.pem``/``server.key``)
    for ``hostnames`` (DNS names or IP addresses), in ``directory``.

    Existing files are kept while they serve: the CA always (clients trust it already), the server
    certificate while it names every host and is valid for another day.
    """
    if not hostnames:
        raise ValueError("hostnames must name at least one host name or IP address")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        directory / "ca.pem", directory / "ca.key", directory / "server.pem", directory / "server.key"
    )
    if not (files.ca_cert.exists() and files.ca_key.exists()):
        _new_ca(files, days)
        files.server_cert.unlink(missing_ok=True)
    if not (files.server_key.exists() and _covers(files.server_cert, hostnames)):
        ca, ca_key = _load(files)
        server, key = _leaf(ca, ca_key, hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, days, hostnames)
        _write_key(files.server_key, key)
        files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return files


def issue_client_cert(files: TlsFiles, name: str, *, days: int = 365) -> tuple[Path, Path]:
    """A client certificate for mutual TLS signed by the CA of ``files``, as
    ``<name>.pem`` and ``<name>.key`` next to it; existing files are kept."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    cert_path = files.ca_cert.parent / f"{name}.pem"
    key_path = files.ca_cert.parent / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    ca, ca_key = _load(files)
    cert, key = _leaf(ca, ca_key, name, ExtendedKeyUsageOID.CLIENT_AUTH, days)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
