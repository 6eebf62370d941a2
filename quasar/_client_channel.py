"""The command line's channels to a gateway: plaintext, or TLS (mutual with a client certificate) when
`--tls-ca` / `QUASAR_CLIENT_TLS_CA` names the CA that signed the gateway's certificate."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc


@dataclass(frozen=True)
class ClientTls:
    """None of the files: plaintext. `cert` and `key` (both or neither): the client certificate (mutual TLS).
    `server_name`: the name checked against the gateway's certificate instead of the target's host."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def channel(self, target: str) -> grpc.Channel:
        if self.ca is None and self.cert is None:
            return grpc.insecure_channel(target)
        if (self.cert is None) != (self.key is None):
            raise click.BadParameter("give both --tls-cert and --tls-key (mutual TLS), or neither")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "--tls-ca"),
            private_key=_read(self.key, "--tls-key"),
            certificate_chain=_read(self.cert, "--tls-cert"),
        )
        options = [] if self.server_name is None else [("grpc.ssl_target_name_override", self.server_name)]
        return grpc.secure_channel(target, credentials, options=options)


def _read(path: Path | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise click.BadParameter(f"{path} cannot be read: {error.strerror or error}", param_hint=option) from None


def tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --tls-ca, --tls-cert, --tls-key, --tls-server-name (each also from QUASAR_CLIENT_TLS_*) and
    hands the command one `tls: ClientTls` instead of four values."""

    @functools.wraps(command)
    def with_tls(*args: Any, **kwargs: Any) -> Any:
        tls = ClientTls(
            ca=kwargs.pop("tls_ca"),
            cert=kwargs.pop("tls_cert"),
            key=kwargs.pop("tls_key"),
            server_name=kwargs.pop("tls_server_name"),
        )
        return command(*args, tls=tls, **kwargs)

    path = click.Path(path_type=Path, dir_okay=False)
    decorated: Callable[..., Any] = with_tls
    for name, kind, help_text in reversed(
        (
            ("ca", path, "PEM CA that signed the gateway's certificate: TLS"),
            ("cert", path, "PEM client certificate (mutual TLS)"),
            ("key", path, "PEM client key (mutual TLS)"),
            ("server-name", str, "name to check the gateway's certificate against"),
        )
    ):
        decorated = click.option(
            f"--tls-{name}", f"tls_{name.replace('-', '_')}", type=kind, default=None,
            envvar=f"QUASAR_CLIENT_TLS_{name.replace('-', '_').upper()}", help=help_text,
        )(decorated)  # fmt: skip
    return decorated
