"""TLS and mutual TLS for the gateway's port: settings, and server credentials reloaded from files.

Certificates rotate without a restart: grpc asks `CertificateFiles.fetch` before every TLS handshake,
and it answers a new configuration only when one of the files changed on disk (size, mtime or inode:
an atomic rename counts). A rotation caught half-written (an unreadable file, or a key that does not
match its certificate) keeps the last good configuration and logs a warning naming the files, never
their contents; the next handshake tries again.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


class TlsSettings(BaseModel):
    """The gateway's TLS: its certificate chain and key (PEM files) and, for mutual TLS, the CA that
    signs client certificates. `require_client_auth` refuses clients without a certificate signed by
    `client_ca_file`; without it, a client certificate is verified when one is sent, and optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path = Field(description="PEM certificate chain the gateway presents")
    key_file: Path = Field(description="PEM private key of cert_file")
    client_ca_file: Path | None = Field(None, description="PEM CA bundle that signs client certificates (mTLS)")
    require_client_auth: bool = Field(False, description="refuse clients without a certificate (mTLS)")

    @model_validator(mode="after")
    def _client_auth_needs_a_ca(self) -> TlsSettings:
        if self.require_client_auth and self.client_ca_file is None:
            raise ValueError("tls.require_client_auth needs tls.client_ca_file (the CA that signs client certificates)")
        return self


@dataclass(frozen=True)
class _Stamp:
    """What tells a file changed: a rewrite changes size or mtime, an atomic rename the inode."""

    size: int
    mtime_ns: int
    inode: int


def _stamp(path: Path) -> _Stamp:
    try:
        stat = path.stat()
    except OSError as error:
        raise ValueError(f"TLS file {path} cannot be read: {error.strerror or error}") from None
    return _Stamp(stat.st_size, stat.st_mtime_ns, stat.st_ino)


class CertificateFiles:
    """The files of `settings`, read into grpc certificate configurations on demand.

    `load()` reads them now and raises `ValueError` naming the file when one is missing, unreadable or
    when the key does not match the certificate (startup fails loudly). `fetch()` is grpc's per-handshake
    callback: a new configuration when the files changed since the last one read, else None (no change).
    It runs on grpc's threads, hence the lock.
    """

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._files = [settings.cert_file, settings.key_file]
        if settings.client_ca_file is not None:
            self._files.append(settings.client_ca_file)
        self._lock = threading.Lock()
        self._stamps: tuple[_Stamp, ...] | None = None
        self.reloads = 0  # configurations read after the first (operators and tests)

    def load(self) -> grpc.ServerCertificateConfiguration:
        """The configuration from the files as they are now; ValueError naming what is wrong."""
        with self._lock:
            config, self._stamps = self._read()
            return config

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed, else None; never raises (grpc's thread)."""
        with self._lock:
            try:
                stamps = tuple(_stamp(path) for path in self._files)
                if stamps == self._stamps:
                    return None
                config, self._stamps = self._read()
            except (OSError, ValueError) as error:
                # Mid-rotation or broken: keep serving the last good certificate; the next handshake retries.
                log.warning("TLS certificate reload failed; keeping the previous certificate: %s", error)
                return None
            self.reloads += 1
            log.info("TLS certificate reloaded", extra={"cert_file": str(self.settings.cert_file)})
            return config

    def _read(self) -> tuple[grpc.ServerCertificateConfiguration, tuple[_Stamp, ...]]:
        # Stamps first: a file changing while it is read is then seen as changed again next time.
        stamps = tuple(_stamp(path) for path in self._files)
        cert = _read_file(self.settings.cert_file, "tls.cert_file")
        key = _read_file(self.settings.key_file, "tls.key_file")
        _check_pair(self.settings.cert_file, self.settings.key_file)
        ca = None
        if self.settings.client_ca_file is not None:
            ca = _read_file(self.settings.client_ca_file, "tls.client_ca_file")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca), stamps


def server_credentials(settings: TlsSettings) -> tuple[grpc.ServerCredentials, CertificateFiles]:
    """Credentials for `add_secure_port` that follow the files of `settings` (see `CertificateFiles`),
    and the files object (its `reloads` count). Reads the files now: ValueError when they are unusable."""
    files = CertificateFiles(settings)
    # grpc documents None from the fetcher as "no change"; grpc-stubs types the callback without it.
    fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], files.fetch)
    credentials = grpc.dynamic_ssl_server_credentials(
        files.load(), fetch, require_client_authentication=settings.require_client_auth
    )
    return credentials, files


def _read_file(path: Path, setting: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{setting} {path} cannot be read: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting} {path} is not a PEM file")
    return data


def _check_pair(cert_file: Path, key_file: Path) -> None:
    # grpc would only fail the handshakes; the ssl module tells now, and which files disagree.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    except ssl.SSLError as error:
        raise ValueError(
            f"tls.key_file {key_file} does not match tls.cert_file {cert_file} (or one is not PEM): {error.reason}"
        ) from None


def add_port(server: grpc.aio.Server, address: str, tls: TlsSettings | None) -> tuple[int, CertificateFiles | None]:
    """Bind `address` on `server`: plaintext when `tls` is None, else TLS (mutual when configured) with
    certificates reloaded from the files. Returns the port bound (0: it could not bind) and the files."""
    if tls is None:
        return server.add_insecure_port(address), None
    credentials, files = server_credentials(tls)
    return server.add_secure_port(address, credentials), files
