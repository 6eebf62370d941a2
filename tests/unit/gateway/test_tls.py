"""TLS settings and certificate reloading (files only: no sockets; handshakes are in tests/integration)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from gateway.tls import CertificateFiles, TlsSettings
from tests.peers.certs import CertFiles, authority, issue, replace_files, write


@pytest.fixture
def files(tmp_path: Path) -> CertFiles:
    ca = authority("unit CA")
    return write(tmp_path, "server", ca, issue(ca, "gateway", server=True))


def settings_for(files: CertFiles, **more: object) -> TlsSettings:
    return TlsSettings(cert_file=files.cert, key_file=files.key, **more)  # type: ignore[arg-type]


def test_require_client_auth_needs_a_client_ca(files: CertFiles) -> None:
    with pytest.raises(ValidationError, match=r"require_client_auth needs tls\.client_ca_file"):
        settings_for(files, require_client_auth=True)
    assert settings_for(files, require_client_auth=True, client_ca_file=files.ca).require_client_auth


def test_admin_requires_tls_without_tls_is_a_startup_error(files: CertFiles) -> None:
    with pytest.raises(ValidationError, match="admin_requires_tls is set but no tls block"):
        GatewaySettings(admin_requires_tls=True)
    settings = GatewaySettings(admin_requires_tls=True, tls=settings_for(files))
    assert settings.tls is not None
    assert settings.tls.cert_file == files.cert


def test_reflection_is_off_unless_enabled() -> None:
    assert GatewaySettings().reflection is False
    assert GatewaySettings(reflection=True).reflection is True


def test_load_names_a_missing_file(files: CertFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(ValueError, match=r"nope.key cannot be read"):
        CertificateFiles(TlsSettings(cert_file=files.cert, key_file=missing)).load()


def test_load_refuses_a_key_of_another_certificate(files: CertFiles, tmp_path: Path) -> None:
    other_ca = authority("other CA")
    other = write(tmp_path / "other", "server", other_ca, issue(other_ca, "gateway", server=True))
    with pytest.raises(ValueError, match=r"does not match tls\.cert_file") as raised:
        CertificateFiles(TlsSettings(cert_file=files.cert, key_file=other.key)).load()
    assert "PRIVATE KEY" not in str(raised.value)  # the message names files, never their contents


def test_fetch_answers_a_new_configuration_only_when_the_files_change(files: CertFiles) -> None:
    certs = CertificateFiles(settings_for(files, client_ca_file=files.ca))
    certs.load()
    assert certs.fetch() is None
    assert certs.fetch() is None
    new_ca = authority("rotated CA")
    replace_files(files, new_ca, issue(new_ca, "gateway", server=True))
    assert certs.fetch() is not None
    assert certs.reloads == 1
    assert certs.fetch() is None  # read once per change, not per handshake


def test_a_half_rotated_pair_keeps_the_previous_configuration(
    files: CertFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certs = CertificateFiles(settings_for(files))
    certs.load()
    new_ca = authority("rotated CA")
    new = issue(new_ca, "gateway", server=True)
    files.key.write_bytes(new.key_pem)  # the key is new, the certificate not yet
    with caplog.at_level(logging.WARNING, logger="gateway.tls"):
        assert certs.fetch() is None
    assert "keeping the previous certificate" in caplog.text
    assert "does not match" in caplog.text
    assert new.key_pem.decode() not in caplog.text
    files.cert.write_bytes(new.cert_pem)  # rotation completes: the next handshake picks it up
    assert certs.fetch() is not None
    assert certs.reloads == 1
