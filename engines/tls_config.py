"""TLS to a gRPC backend (engines and remote candidate services), validated at startup."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator


class GrpcTlsConfig(BaseModel):
    """TLS to a gRPC backend. `ca_file`: PEM roots that sign the server's certificate (None: the system's);
    `cert_file` + `key_file` (both or neither): the client certificate for mutual TLS;
    `server_name_override`: the name checked against the server's certificate instead of the URL's host
    (an address by IP, a test CA). Files are read when the engine starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name_override: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> GrpcTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: give both cert_file and key_file (mutual TLS), or neither")
        return self
