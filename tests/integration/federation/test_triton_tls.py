"""Triton over mutual TLS: a real Triton (PyTriton) whose gRPC endpoint takes only TLS clients presenting a
certificate its CA signed. Quasar's engine with the CA and a client certificate scores the ranker; without
the client certificate, or in plaintext, it is refused at startup with a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engines.errors import EngineUnavailable
from engines.tls_config import GrpcTlsConfig
from engines.triton import TritonEngine
from engines.types import ModelRef
from quasar.demo.layout import RANKER_INPUT, RANKER_OUTPUT
from quasar.demo.onnx_export import run_onnx
from tests.integration.federation.conftest import started
from tests.peers import certs
from tests.peers.triton_server import TritonPeer, TritonTls, start_triton_peer

RANKER = "feed_ranker"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[certs.CertFiles, certs.CertFiles]:
    """(server files, client files): one CA for the server, another for clients."""
    directory = tmp_path_factory.mktemp("triton-pki")
    server_ca, client_ca = certs.authority("triton server CA"), certs.authority("quasar clients CA")
    server = certs.write(directory, "server", server_ca, certs.issue(server_ca, "triton", server=True))
    client = certs.write(directory, "client", client_ca, certs.issue(client_ca, "quasar-gateway", server=False))
    return server, client


@pytest.fixture(scope="module")
def tls_triton(small_world: Path, pki: tuple[certs.CertFiles, certs.CertFiles]) -> Iterator[TritonPeer]:
    server, client = pki
    tls = TritonTls(
        cert=server.cert,
        key=server.key,
        ca=server.ca,
        client_ca=client.ca,
        probe_cert=client.cert,
        probe_key=client.key,
    )
    with start_triton_peer(small_world, tls=tls) as peer:
        yield peer


def _engine(peer: TritonPeer, tls: GrpcTlsConfig | None) -> TritonEngine:
    return TritonEngine("triton", peer.url_grpc, {RANKER: RANKER}, startup_timeout_s=3.0, tls=tls)


async def test_mutual_tls_to_triton_scores_the_ranker(
    tls_triton: TritonPeer, pki: tuple[certs.CertFiles, certs.CertFiles], small_world: Path
) -> None:
    server, client = pki
    tls = GrpcTlsConfig(ca_file=server.ca, cert_file=client.cert, key_file=client.key, server_name_override="triton")
    rows = np.random.default_rng(3).random((64, 77), dtype=np.float32)
    async with started(_engine(tls_triton, tls)) as triton:
        scores = (await triton.infer(ModelRef(RANKER), {RANKER_INPUT: rows}, timeout_s=5.0))[RANKER_OUTPUT]
    np.testing.assert_allclose(scores, run_onnx(small_world / "models" / "ranker.onnx", rows), atol=1e-6, rtol=0)


@pytest.mark.parametrize("without", ["client certificate", "tls"])
async def test_triton_refuses_a_client_without_its_certificate_or_without_tls(
    tls_triton: TritonPeer, pki: tuple[certs.CertFiles, certs.CertFiles], without: str
) -> None:
    server, _client = pki
    tls = None if without == "tls" else GrpcTlsConfig(ca_file=server.ca, server_name_override="triton")
    triton = _engine(tls_triton, tls)
    with pytest.raises(EngineUnavailable, match="UNAVAILABLE"):
        await triton.start()
    await triton.close()
