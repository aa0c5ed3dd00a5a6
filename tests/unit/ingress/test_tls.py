"""Certificates made for development, server TLS credentials and their configuration errors,
client TLS credentials."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sluice.certs import TlsFiles, generate_self_signed, issue_client_cert
from sluice.client.tls import tls_credentials
from sluice.exceptions import ConfigurationError
from sluice.ingress.tls import server_credentials
from sluice.settings import TlsSettings


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return generate_self_signed(tmp_path_factory.mktemp("tls"), ["localhost", "127.0.0.1", "::1", "gw.example"])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def error(tls: TlsSettings) -> str:
    with pytest.raises(ConfigurationError) as info:
        server_credentials(tls)
    return str(info.value)


# --- generated certificates --------------------------------------------------------------


def test_server_certificate_names_and_chain(certs: TlsFiles) -> None:
    ca, server = load(certs.ca_cert), load(certs.server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (certs.ca_key.stat().st_mode & 0o777, certs.server_key.stat().st_mode & 0o777) == (0o600, 0o600)


def test_existing_files_are_kept_while_they_serve(tmp_path: Path) -> None:
    files = generate_self_signed(tmp_path)
    ca, server = files.ca_cert.read_bytes(), files.server_cert.read_bytes()
    assert generate_self_signed(tmp_path, ["127.0.0.1"]) == files
    assert (files.ca_cert.read_bytes(), files.server_cert.read_bytes()) == (ca, server)
    # A host the server certificate does not name: a new one, from the same CA.
    assert generate_self_signed(tmp_path, ["localhost", "gw.internal"]) == files
    assert files.ca_cert.read_bytes() == ca
    renewed = load(files.server_cert)
    assert renewed.public_bytes(serialization.Encoding.PEM) != server
    renewed.verify_directly_issued_by(load(files.ca_cert))
    san = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.internal"]


def test_client_certificate(certs: TlsFiles) -> None:
    cert_path, key_path = issue_client_cert(certs, "agent-7")
    assert (cert_path.name, key_path.name) == ("agent-7.pem", "agent-7.key")
    cert = load(cert_path)
    cert.verify_directly_issued_by(load(certs.ca_cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "agent-7"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert key_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match=r"^name must be a plain file name, got '../x'$"):
        issue_client_cert(certs, "../x")


def test_generation_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^hostnames must name at least one host name or IP address$"):
        generate_self_signed(tmp_path, [])
    with pytest.raises(ValueError, match="^days must be >= 1, got 0$"):
        generate_self_signed(tmp_path, days=0)


# --- server credentials ------------------------------------------------------------------


def test_plaintext_without_a_certificate() -> None:
    assert server_credentials(TlsSettings()) is None


def test_tls_and_mutual_tls(certs: TlsFiles) -> None:
    tls = TlsSettings(cert_file=certs.server_cert, key_file=certs.server_key)
    assert isinstance(server_credentials(tls), grpc.ServerCredentials)
    tls.client_ca_file = certs.ca_cert
    assert isinstance(server_credentials(tls), grpc.ServerCredentials)


def test_incomplete_settings(certs: TlsFiles) -> None:
    assert error(TlsSettings(cert_file=certs.server_cert)) == (
        "tls.cert_file is set but tls.key_file is not (hint: set SLUICE_TLS_KEY_FILE to its PEM private key)"
    )
    assert error(TlsSettings(client_ca_file=certs.ca_cert)) == (
        "tls.key_file or tls.client_ca_file is set but tls.cert_file is not "
        "(hint: set SLUICE_TLS_CERT_FILE to the server's PEM certificate chain)"
    )


def test_unreadable_and_invalid_files(certs: TlsFiles, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    assert error(TlsSettings(cert_file=missing, key_file=certs.server_key)) == (
        f"cannot read tls.cert_file {missing}: No such file or directory"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert error(TlsSettings(cert_file=garbage, key_file=certs.server_key)) == (
        f"tls.cert_file {garbage} holds no PEM certificate"
    )
    assert error(TlsSettings(cert_file=certs.server_cert, key_file=garbage)) == (
        f"tls.key_file {garbage} is not an unencrypted PEM private key"
    )
    assert error(TlsSettings(cert_file=certs.server_cert, key_file=certs.server_key, client_ca_file=garbage)) == (
        f"tls.client_ca_file {garbage} holds no PEM certificate"
    )


def test_key_of_another_certificate(certs: TlsFiles) -> None:
    assert error(TlsSettings(cert_file=certs.server_cert, key_file=certs.ca_key)) == (
        f"tls.key_file {certs.ca_key} is not the key of the certificate in tls.cert_file {certs.server_cert}"
    )


def test_expired_certificate(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
        .not_valid_after(datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "old.pem", tmp_path / "old.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    assert error(TlsSettings(cert_file=cert_path, key_file=key_path)) == (
        f"tls.cert_file {cert_path}: the certificate for CN=old expired on 2021-01-01 00:00 UTC"
    )


# --- client credentials ------------------------------------------------------------------


def test_client_credentials(certs: TlsFiles, tmp_path: Path) -> None:
    assert tls_credentials() is None
    assert isinstance(tls_credentials(certs.ca_cert), grpc.ChannelCredentials)
    cert, key = issue_client_cert(certs, "agent-8")
    assert isinstance(tls_credentials(certs.ca_cert, cert, key), grpc.ChannelCredentials)
    with pytest.raises(ConfigurationError, match="^a client certificate needs both its certificate and its key file$"):
        tls_credentials(certs.ca_cert, cert)
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigurationError) as info:
        tls_credentials(missing)
    assert str(info.value) == f"cannot read the CA file {missing}: No such file or directory"
