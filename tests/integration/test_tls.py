"""The gateway over TLS and mutual TLS, certificate rotation without restart, the admin service over TLS
only, reflection off unless enabled, and secrets kept out of logs and reprs. Real servers on port 0,
real handshakes, throwaway certificates made per test."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from engines.config import GrpcTlsConfig
from engines.errors import EngineUnavailable
from engines.tfserving import TFServingEngine
from engines.types import ModelRef
from gateway.settings import GatewaySettings
from gateway.tls import TlsSettings
from kvstore.config import RedisStoreConfig
from quasar.v1 import admin_pb2, admin_pb2_grpc, feed_pb2, feed_pb2_grpc
from tests.integration.conftest import Gates, RunningGateway, make_settings, start_gateway
from tests.peers.certs import Authority, CertFiles, Issued, authority, issue, replace_files, write
from tests.peers.fixtures import session_tf_models
from tests.peers.tfserving_peer import MODEL, start_tfserving_peer

TOKEN = "tls-admin-token-0f9e8d7c"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: CertFiles
    client: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = authority("quasar test CA")
    server = write(tmp_path / "server", "gateway", ca, issue(ca, "gateway", server=True))
    return Pki(ca, server, issue(ca, "feed-frontend", server=False))


def tls_channel(target: str, ca: Authority, client: Issued | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.aio.secure_channel(target, credentials)


async def health(channel: grpc.aio.Channel) -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    return await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The code a call on `channel` fails with (the test fails if the call is answered)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health(channel)
    await channel.close()
    return raised.value.code()


async def start(small_world: Path, test_workflows: Path, **overrides: Any) -> RunningGateway:
    return await start_gateway(make_settings(small_world, test_workflows, **overrides), Gates())


async def stop(gateway: RunningGateway) -> None:
    await gateway.channel.close()  # the plaintext channel start_gateway opens
    await gateway.server.drain_and_stop()


async def test_tls_gateway_answers_tls_clients_and_refuses_plaintext(
    small_world: Path, test_workflows: Path, pki: Pki
) -> None:
    tls = TlsSettings(cert_file=pki.server.cert, key_file=pki.server.key)
    gateway = await start(small_world, test_workflows, tls=tls)
    try:
        assert await refused(grpc.aio.insecure_channel(gateway.target)) is grpc.StatusCode.UNAVAILABLE
        async with tls_channel(gateway.target, pki.ca) as channel:
            assert (await health(channel)).status == health_pb2.HealthCheckResponse.SERVING
            reply = await feed_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_pb2.GetFeedRequest(member_id=3, count=5), timeout=CALL_TIMEOUT_S
            )
            assert len(reply.items) == 5
        # a client trusting another CA does not accept the gateway's certificate
        assert await refused(tls_channel(gateway.target, authority("stranger CA"))) is grpc.StatusCode.UNAVAILABLE
    finally:
        await stop(gateway)


async def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    small_world: Path, test_workflows: Path, pki: Pki
) -> None:
    tls = TlsSettings(
        cert_file=pki.server.cert, key_file=pki.server.key, client_ca_file=pki.server.ca, require_client_auth=True
    )
    gateway = await start(small_world, test_workflows, tls=tls)
    try:
        assert await refused(tls_channel(gateway.target, pki.ca)) is grpc.StatusCode.UNAVAILABLE
        stranger = authority("stranger CA")
        impostor = issue(stranger, "feed-frontend", server=False)
        assert await refused(tls_channel(gateway.target, pki.ca, impostor)) is grpc.StatusCode.UNAVAILABLE
        async with tls_channel(gateway.target, pki.ca, pki.client) as channel:
            assert (await health(channel)).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await stop(gateway)


async def test_rotated_certificates_serve_new_handshakes_without_a_restart(
    small_world: Path, test_workflows: Path, pki: Pki
) -> None:
    tls = TlsSettings(
        cert_file=pki.server.cert, key_file=pki.server.key, client_ca_file=pki.server.ca, require_client_auth=True
    )
    gateway = await start(small_world, test_workflows, tls=tls)
    try:
        before = tls_channel(gateway.target, pki.ca, pki.client)
        assert (await health(before)).status == health_pb2.HealthCheckResponse.SERVING
        new_ca = authority("rotated CA")
        new_client = issue(new_ca, "feed-frontend", server=False)
        assert await refused(tls_channel(gateway.target, new_ca, new_client)) is grpc.StatusCode.UNAVAILABLE

        # server certificate, key and client CA all move to the new CA; the process keeps running
        replace_files(pki.server, new_ca, issue(new_ca, "gateway", server=True))

        async with tls_channel(gateway.target, new_ca, new_client) as channel:
            assert (await health(channel)).status == health_pb2.HealthCheckResponse.SERVING
        assert await refused(tls_channel(gateway.target, pki.ca, pki.client)) is grpc.StatusCode.UNAVAILABLE
        assert gateway.server.certificates is not None
        assert gateway.server.certificates.reloads == 1
        # a connection made before the rotation keeps working: rotation affects handshakes only
        assert (await health(before)).status == health_pb2.HealthCheckResponse.SERVING
        await before.close()
    finally:
        await stop(gateway)


async def test_admin_service_is_served_over_tls_when_required(
    small_world: Path, test_workflows: Path, pki: Pki
) -> None:
    tls = TlsSettings(cert_file=pki.server.cert, key_file=pki.server.key)
    gateway = await start(small_world, test_workflows, tls=tls, admin_token=TOKEN, admin_requires_tls=True)
    try:
        async with tls_channel(gateway.target, pki.ca) as channel:
            routes = await admin_pb2_grpc.AdminServiceStub(channel).GetRoutes(
                admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=CALL_TIMEOUT_S
            )
            assert routes.version
        plaintext = grpc.aio.insecure_channel(gateway.target)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin_pb2_grpc.AdminServiceStub(plaintext).GetRoutes(
                admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=CALL_TIMEOUT_S
            )
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        await plaintext.close()
    finally:
        await stop(gateway)


async def list_services(channel: grpc.aio.Channel) -> list[str]:
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    answer = await call.read()
    assert answer is not grpc.aio.EOF, "reflection answered nothing"
    call.cancel()
    return [service.name for service in answer.list_services_response.service]


@pytest.mark.parametrize("enabled", [False, True], ids=["default", "enabled"])
async def test_reflection_is_off_unless_enabled(small_world: Path, test_workflows: Path, enabled: bool) -> None:
    from gateway.settings import GatewaySettings

    # the settings' own default, not the test helper's (which turns reflection on for other tests)
    default = GatewaySettings.model_fields["reflection"].default
    assert default is False
    gateway = await start(small_world, test_workflows, reflection=True if enabled else default)
    try:
        if enabled:
            assert "quasar.v1.FeedService" in await list_services(gateway.channel)
        else:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await list_services(gateway.channel)
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await stop(gateway)


async def test_secrets_never_reach_logs_or_reprs(
    small_world: Path, test_workflows: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    redis_password = "redis-pa55-7c6b5a49"
    url_password = "url-pa55-1d2e3f4a"
    caplog.set_level(logging.DEBUG)
    tls = TlsSettings(cert_file=pki.server.cert, key_file=pki.server.key)
    gateway = await start(
        small_world, test_workflows, tls=tls, admin_token=TOKEN, admin_requires_tls=True, log_level="DEBUG"
    )
    try:
        async with tls_channel(gateway.target, pki.ca) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            await admin.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=CALL_TIMEOUT_S)
            with pytest.raises(grpc.aio.AioRpcError) as raised:  # a wrong token is refused, and not echoed
                await admin.GetRoutes(
                    admin_pb2.GetRoutesRequest(), metadata=(("authorization", f"Bearer x{TOKEN}"),), timeout=5
                )
            assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert TOKEN not in (raised.value.details() or "")
            await feed_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_pb2.GetFeedRequest(member_id=3, count=5), timeout=CALL_TIMEOUT_S
            )
    finally:
        await stop(gateway)
    settings = GatewaySettings(
        admin_token=TOKEN,
        stores={
            "features": RedisStoreConfig(
                url=f"redis://reader:{url_password}@127.0.0.1:6390/0", username="reader", password=redis_password
            )
        },
    )
    captured = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert captured, "nothing was logged: the grep below would prove nothing"
    key_pem = pki.server.key.read_text()
    for secret in (TOKEN, redis_password, url_password, key_pem.splitlines()[1]):
        assert secret not in captured
        assert secret not in repr(settings)
        assert secret not in str(settings)
    assert "reader:***@127.0.0.1" in repr(settings)


async def test_tfserving_engine_over_mutual_tls(
    request: pytest.FixtureRequest, small_world: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The TF Serving conformance peer (a test server speaking TF Serving's API, not TF Serving) over mTLS."""
    models = session_tf_models(request.config, small_world, tmp_path_factory.getbasetemp())
    ca = authority("backend CA")
    server = write(tmp_path / "peer", "peer", ca, issue(ca, "tfserving", server=True))
    client = write(tmp_path / "client", "gateway", ca, issue(ca, "gateway", server=False))
    with start_tfserving_peer({MODEL: models}, tls=(server.cert, server.key, server.ca)) as peer:
        url = f"127.0.0.1:{peer.port}"
        tls = GrpcTlsConfig(ca_file=client.ca, cert_file=client.cert, key_file=client.key)
        engine = TFServingEngine("tfs", url, MODEL, tls=tls)
        await engine.start()
        try:
            meta = await engine.metadata(ModelRef(MODEL))
            inputs = {spec.name: np.zeros((2, *(d for d in spec.shape[1:])), dtype=spec.dtype) for spec in meta.inputs}
            outputs = await engine.infer(ModelRef(MODEL), inputs, timeout_s=CALL_TIMEOUT_S)
            assert {name: value.shape[0] for name, value in outputs.items()} == {s.name: 2 for s in meta.outputs}
        finally:
            await engine.close()
        # without a client certificate, and over plaintext, the peer is not reached
        for tls_config in (GrpcTlsConfig(ca_file=client.ca), None):
            refused_engine = TFServingEngine("tfs", url, MODEL, tls=tls_config, startup_timeout_s=2.0)
            with pytest.raises(EngineUnavailable):
                await refused_engine.start()
            await refused_engine.close()


def test_an_unreadable_engine_tls_file_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    from engines._grpc import open_channel

    with pytest.raises(ValueError, match=r"engine 'tfs': tls\.ca_file .*missing\.pem cannot be read"):
        open_channel("127.0.0.1:1", GrpcTlsConfig(ca_file=tmp_path / "missing.pem"), engine="tfs")


async def test_the_command_line_speaks_tls_to_a_tls_gateway(small_world: Path, test_workflows: Path, pki: Pki) -> None:
    import asyncio

    from click.testing import CliRunner

    from quasar.cli import main

    tls = TlsSettings(cert_file=pki.server.cert, key_file=pki.server.key)
    gateway = await start(small_world, test_workflows, tls=tls, admin_token=TOKEN)
    target = f"127.0.0.1:{gateway.server.port}"

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args))

    try:
        ready = await asyncio.to_thread(
            run, "wait-ready", "--target", target, "--timeout-s", "10", "--tls-ca", str(pki.server.ca)
        )
        assert ready.exit_code == 0, ready.output
        answered = await asyncio.to_thread(
            run, "feed", "--member", "42", "--target", target, "--tls-ca", str(pki.server.ca)
        )
        assert answered.exit_code == 0, answered.output
        assert "feed for request" in answered.output
        routes = await asyncio.to_thread(
            run, "routes", "show", "--target", target, "--token", TOKEN, "--tls-ca", str(pki.server.ca)
        )
        assert routes.exit_code == 0, routes.output
        assert "feed_ranker" in routes.output
        plaintext = await asyncio.to_thread(run, "feed", "--member", "42", "--target", target, "--timeout-s", "2")
        assert plaintext.exit_code == 1
        assert "GetFeed failed: UNAVAILABLE" in plaintext.output
    finally:
        await stop(gateway)
