"""The generated quasar.v1 modules must match what `make proto` produces from proto/ now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = (
    *("feed_pb2.py", "feed_pb2.pyi", "feed_pb2_grpc.py", "feed_pb2_grpc.pyi"),
    *("admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py", "admin_pb2_grpc.pyi"),
    *("candidates_pb2.py", "candidates_pb2.pyi", "candidates_pb2_grpc.py", "candidates_pb2_grpc.pyi"),
)


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    env_path = f"{Path(sys.executable).parent}"
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={"PATH": f"{env_path}:/usr/bin:/bin"},
    )
    stale = [
        name
        for name in GENERATED
        if (tmp_path / "quasar" / "v1" / name).read_bytes() != (ROOT / "quasar" / "v1" / name).read_bytes()
    ]
    assert not stale, f"quasar/v1/{stale} are stale: run `make proto` and commit the result"


def test_generated_service_matches_proto() -> None:
    from quasar.v1 import feed_pb2

    service = feed_pb2.DESCRIPTOR.services_by_name["FeedService"]
    assert service.full_name == "quasar.v1.FeedService"
    assert [m.name for m in service.methods] == ["GetFeed"]


def test_generated_admin_service_matches_proto() -> None:
    from quasar.v1 import admin_pb2

    service = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
    assert service.full_name == "quasar.v1.AdminService"
    methods = ["GetRoutes", "SetRoutes", "ApplyRelease", "RollbackRelease", "GetReleases"]
    assert [m.name for m in service.methods] == methods
