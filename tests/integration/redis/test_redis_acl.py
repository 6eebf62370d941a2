"""RedisStore security against real redis-server processes: an ACL user with a password, a wrong password
refused with a clear message that never holds the password, TLS with a client certificate, and no secret
in logs or reprs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kvstore.config import RedisStoreConfig, RedisTlsConfig
from kvstore.errors import StoreUnavailable
from kvstore.redis import RedisStore
from tests.integration.redis.servers import RedisServer, free_port
from tests.peers.certs import CertFiles, authority, issue, write

USER = "ranker"
PASSWORD = "acl-pa55-9b8a7f6e"


@dataclass(frozen=True)
class TlsRedis:
    server: RedisServer
    tls_port: int
    client: CertFiles  # the client certificate, its key and the CA (which also signs the server's)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server with ACL user `ranker` (the default user stays open for the fixture's PING)."""
    server = RedisServer(tmp_path / "acl-redis").start()
    try:
        assert server.command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "+@all") == b"OK"
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """A private server that also listens for TLS, requiring client certificates, with user `ranker`."""
    ca = authority("redis test CA")
    served = write(tmp_path / "certs", "redis", ca, issue(ca, "redis", server=True))
    client = write(tmp_path / "certs", "client", ca, issue(ca, "quasar", server=False))
    tls_port = free_port()
    server = RedisServer(
        tmp_path / "tls-redis",
        None,
        *("--tls-port", str(tls_port), "--tls-cert-file", str(served.cert), "--tls-key-file", str(served.key)),
        *("--tls-ca-cert-file", str(served.ca), "--tls-auth-clients", "yes"),
    ).start()
    try:
        assert server.command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "+@all") == b"OK"
        yield TlsRedis(server, tls_port, client)
    finally:
        server.stop()


async def round_trip(store: RedisStore) -> None:
    """Write a version, make it current, read it back: the connection is authenticated and usable."""
    ids = np.array([3, 1, 2], dtype=np.int64)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    await store.write_version("t", ids, rows, version="v1")
    await store.set_current("t", "v1")
    result = await store.lookup("t", np.array([2, 9], dtype=np.int64), version=(await store.current_version("t")) or "")
    assert result.found.tolist() == [True, False]
    np.testing.assert_array_equal(result.vectors[0], rows[2])


async def test_an_acl_user_reads_and_writes_with_its_password(
    acl_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = RedisStoreConfig(url=acl_redis.url, username=USER, password=PASSWORD, prefix=prefix, timeout_s=5.0)
    store = config.build_admin()
    assert isinstance(store, RedisStore)
    await store.start()
    try:
        await round_trip(store)
    finally:
        await store.close()
    assert acl_redis.calls("auth") >= 1
    for text in (caplog.text, repr(config), str(config), repr(store.address), str(store.address)):
        assert PASSWORD not in text


@pytest.mark.parametrize("where", ["field", "url"])
async def test_a_wrong_password_is_a_clear_error_without_the_password(
    acl_redis: RedisServer, prefix: str, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-pa55-5d4c3b2a"
    if where == "field":
        config = RedisStoreConfig(url=acl_redis.url, username=USER, password=wrong, prefix=prefix)
    else:
        config = RedisStoreConfig(url=f"redis://{USER}:{wrong}@127.0.0.1:{acl_redis.port}/0", prefix=prefix)
    store = config.build()
    with pytest.raises(StoreUnavailable) as raised:
        await store.start()
    message = str(raised.value)
    assert f"authentication as user '{USER}' refused" in message
    assert "WRONGPASS" in message
    for text in (message, repr(raised.value), caplog.text, repr(config)):
        assert wrong not in text
    assert f"{USER}:***@" in repr(config) if where == "url" else "SecretStr('**********')" in repr(config)


async def test_a_store_without_credentials_is_refused_by_an_acl_protected_server(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path / "locked").start()
    try:
        # lock the default user only now: the fixture's readiness PING ran unauthenticated
        assert server.command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "+@all") == b"OK"
        assert server.command("ACL", "SETUSER", "default", "off") == b"OK"
        with pytest.raises(StoreUnavailable, match=r"NOAUTH|NOPERM|authentication"):
            await RedisStore(server.url, prefix=prefix).start()
        store = RedisStore(server.url, prefix=prefix, username=USER, password=PASSWORD, timeout_s=5.0)
        await store.start()
        await round_trip(store)
        await store.close()
    finally:
        server.stop()


async def test_tls_with_a_client_certificate_and_an_acl_user(tls_redis: TlsRedis, prefix: str) -> None:
    client = tls_redis.client
    tls = RedisTlsConfig(ca_file=client.ca, cert_file=client.cert, key_file=client.key)
    url = f"rediss://127.0.0.1:{tls_redis.tls_port}/0"
    config = RedisStoreConfig(url=url, username=USER, password=PASSWORD, tls=tls, prefix=prefix, timeout_s=5.0)
    store = config.build_admin()
    assert isinstance(store, RedisStore)
    await store.start()
    try:
        await round_trip(store)
    finally:
        await store.close()
    # the same server reached over its TLS port by a client without a certificate: refused in the handshake
    bare = RedisStore(url, prefix=prefix, username=USER, password=PASSWORD, tls=RedisTlsConfig(ca_file=client.ca))
    with pytest.raises(StoreUnavailable, match="cannot reach rediss://"):
        await bare.start()
    # a client that does not trust the server's CA refuses it
    stranger = write(
        client.ca.parent / "stranger", "s", authority("stranger"), issue(authority("x"), "x", server=False)
    )
    untrusting = RedisStore(
        url, prefix=prefix, tls=RedisTlsConfig(ca_file=stranger.ca, cert_file=client.cert, key_file=client.key)
    )
    with pytest.raises(StoreUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await untrusting.start()
    # plaintext to the TLS port gets no Redis answer
    with pytest.raises(StoreUnavailable):
        await RedisStore(f"redis://127.0.0.1:{tls_redis.tls_port}/0", prefix=prefix, connect_timeout_s=1.0).start()
