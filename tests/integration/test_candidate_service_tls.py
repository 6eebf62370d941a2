"""The remote candidate source over TLS: the client trusts the service's CA, plaintext is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from engines.candidate_config import CandidateServiceConfig
from engines.errors import EngineUnavailable
from engines.tls_config import GrpcTlsConfig
from quasar.candidate_server import CandidateServicer, MemberList
from quasar.v1 import candidates_pb2_grpc
from tests.peers.certs import CertFiles, authority, issue, write


class _Lists:
    async def lookup(self, member_id: int, *, source: str, timeout_s: float | None) -> MemberList:
        return MemberList(item_ids=np.array([7, 8, 9], np.int64), scores=None, version="v1")


@pytest.fixture
def server_files(tmp_path: Path) -> CertFiles:
    ca = authority("candidates test CA")
    return write(tmp_path, "server", ca, issue(ca, "localhost", server=True))


@pytest.fixture
async def tls_service(server_files: CertFiles) -> AsyncIterator[int]:
    server = grpc.aio.server()
    candidates_pb2_grpc.add_CandidateServiceServicer_to_server(CandidateServicer(_Lists()), server)
    credentials = grpc.ssl_server_credentials([(server_files.key.read_bytes(), server_files.cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


async def _retrieve(config: CandidateServiceConfig) -> np.ndarray:
    client = config.build("jobs_network")
    await client.start()
    try:
        ids, _ = await client.retrieve(42, limit=3, context={}, source="s", request_id="r", timeout_s=2.0)
        return ids
    finally:
        await client.close()


async def test_the_client_speaks_tls_to_a_tls_service(tls_service: int, server_files: CertFiles) -> None:
    tls = GrpcTlsConfig(ca_file=server_files.ca, server_name_override="localhost")
    ids = await _retrieve(CandidateServiceConfig(target=f"127.0.0.1:{tls_service}", tls=tls, connect_wait_s=0))
    assert ids.tolist() == [7, 8, 9]


async def test_plaintext_to_a_tls_service_is_refused(tls_service: int) -> None:
    with pytest.raises(EngineUnavailable):
        await _retrieve(CandidateServiceConfig(target=f"127.0.0.1:{tls_service}", connect_wait_s=0))
