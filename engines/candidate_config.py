"""Typed configuration of a remote candidate service (`quasar.v1.CandidateService`), validated at startup."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from engines.tls_config import GrpcTlsConfig

if TYPE_CHECKING:
    from engines.candidate_client import GrpcCandidateClient

# host:port, host being a name, an IPv4 address or a bracketed IPv6 address.
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")
# Targets in gRPC's own naming syntax are passed through as they are.
_GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


class CandidateServiceConfig(BaseModel):
    """One remote candidate service, named by its key in the engines config.

    `target`: "host:port" (or a gRPC target such as "dns:///svc:50051", "unix:/run/svc.sock").
    `timeout_s` caps every call below the calling step's remaining budget (None: the budget alone).
    `connect_wait_s`: how long `start()` waits for a first connection before going on without one; a
    service that is down never fails startup (0: do not wait, only start connecting).
    `max_ids`: the largest `limit` a source may ask for. `metadata` goes with every call (e.g. a token).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str
    timeout_s: PositiveFloat | None = None
    connect_wait_s: Annotated[float, Field(ge=0.0)] = 0.5
    max_ids: PositiveInt = 10_000
    metadata: dict[str, str] = Field(default_factory=dict)
    tls: GrpcTlsConfig | None = Field(None, description="TLS to the service; null: plaintext")

    @field_validator("target")
    @classmethod
    def _target_names_an_endpoint(cls, target: str) -> str:
        if target.startswith(_GRPC_SCHEMES):
            return target
        match = _HOST_PORT.fullmatch(target)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise ValueError(
                f"target must be host:port (port 1-65535) or a gRPC target like dns:///host:port, got {target!r}"
            )
        return target

    @field_validator("metadata")
    @classmethod
    def _metadata_keys_are_lowercase(cls, metadata: dict[str, str]) -> dict[str, str]:
        # gRPC rejects upper-case metadata keys at call time; say so at startup instead.
        bad = sorted(key for key in metadata if not key or key != key.lower() or key.startswith("grpc-"))
        if bad:
            raise ValueError(f"metadata keys must be lower-case and must not start with 'grpc-': {bad}")
        return metadata

    def build(self, name: str) -> GrpcCandidateClient:
        """The client for this service, not started (no I/O here)."""
        from engines.candidate_client import GrpcCandidateClient

        return GrpcCandidateClient(
            name,
            self.target,
            max_ids=self.max_ids,
            timeout_s=self.timeout_s,
            connect_wait_s=self.connect_wait_s,
            metadata=self.metadata,
            tls=self.tls,
        )
