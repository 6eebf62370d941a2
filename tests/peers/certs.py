"""Throwaway certificate authorities and certificates for TLS tests, generated with `cryptography`.

Keys are P-256 (fast to make), certificates valid for a day, written as PEM files under a test's
temporary directory; nothing here is ever committed. Server certificates name `localhost` and
127.0.0.1, so clients connecting to 127.0.0.1 verify them without a name override.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Authority:
    """A CA: its key signs, its certificate (`cert_pem`) is what peers trust."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM bytes, and the certificate's serial number."""

    cert_pem: bytes
    key_pem: bytes
    serial: int


@dataclass(frozen=True)
class CertFiles:
    """PEM files on disk: a certificate, its key and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)


def authority(name: str) -> Authority:
    """A self-signed CA named `name`."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(name, key, cert)


def issue(ca: Authority, common_name: str, *, server: bool) -> Issued:
    """A leaf certificate signed by `ca`: for a server (names localhost and 127.0.0.1) or a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(common_name),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem, serial)


def write(directory: Path, stem: str, ca: Authority, issued: Issued) -> CertFiles:
    """`issued` and its CA as `<stem>.crt`, `<stem>.key`, `<stem>-ca.crt` under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(directory / f"{stem}.crt", directory / f"{stem}.key", directory / f"{stem}-ca.crt")
    files.cert.write_bytes(issued.cert_pem)
    files.key.write_bytes(issued.key_pem)
    files.key.chmod(0o600)
    files.ca.write_bytes(ca.cert_pem)
    return files


def replace_files(files: CertFiles, ca: Authority, issued: Issued) -> None:
    """Rotate `files` in place the way operators do: write new files beside them, then rename over."""
    for path, data in ((files.ca, ca.cert_pem), (files.key, issued.key_pem), (files.cert, issued.cert_pem)):
        scratch = path.with_name(path.name + ".new")
        scratch.write_bytes(data)
        scratch.replace(path)
