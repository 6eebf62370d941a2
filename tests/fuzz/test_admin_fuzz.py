"""Hypothesis against the AdminService of a gateway of its own (route changes must not disturb the other
fuzzing): arbitrary route tables, removals, versions and tokens get a client status, never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from quasar.v1 import admin_pb2, admin_pb2_grpc
from tests.fuzz.conftest import AUTH, TOKEN, ThreadedGateway, assert_clean, start_threaded
from tests.fuzz.test_config_fuzz import VALUES, route_documents

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUTE_NAMES = st.one_of(st.sampled_from(["first_pass", "feed_ranker", "feed_ranker_whole"]), st.text(max_size=10))


@pytest.fixture(scope="module")
def admin_gateway(small_world: Path) -> Iterator[ThreadedGateway]:
    running = start_threaded(small_world)
    yield running
    running.stop()


@settings(FUZZ, max_examples=80)
@given(
    routes=st.one_of(
        route_documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
        VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
        st.text(max_size=80),
    ),
    remove=st.lists(ROUTE_NAMES, max_size=2),
    expected_version=st.one_of(st.just(""), st.text(max_size=20)),
    dry_run=st.booleans(),
    # printable ASCII: the client library itself refuses to send other header values
    token=st.one_of(st.just(TOKEN), st.just(TOKEN), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))),
)
def test_set_routes_with_arbitrary_fields(
    admin_gateway: ThreadedGateway, routes: str, remove: list[str], expected_version: str, dry_run: bool, token: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(admin_gateway.channel)
    request = admin_pb2.SetRoutesRequest(
        routes=routes, remove=remove, expected_version=expected_version, dry_run=dry_run
    )
    metadata = (("authorization", f"Bearer {token}"),)
    code, detail, _ = admin_gateway.call(stub.SetRoutes, request, metadata=metadata)
    event(code.name)
    assert_clean(code, detail, [routes, *remove, expected_version])
    if token != TOKEN:
        assert code is grpc.StatusCode.UNAUTHENTICATED
    assert not admin_gateway.logs.problems()


def test_the_admin_service_still_answers(admin_gateway: ThreadedGateway) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(admin_gateway.channel)
    assert len(stub.GetRoutes(admin_pb2.GetRoutesRequest(), metadata=AUTH, timeout=10).version) == 16
    admin_gateway.assert_serving()
    assert not admin_gateway.logs.problems()
