"""What a request is served by under several release lines: each line's canary drawn apart with the one
assignment mechanism, pins and routes merged, and releases that would pin one table two ways refused."""

from __future__ import annotations

from pathlib import Path

from engines.assignment import assignment_point
from gateway.release_manifest import Release, ReleaseDecl
from gateway.release_plan import ReleasePlans
from gateway.releases import CANARY_SALT, InForce, Line, pin_conflicts


def _release(name: str, model: str, tables: dict[str, str]) -> Release:
    decl = ReleaseDecl.model_validate(
        {
            "release": name,
            "model": model,
            "signature": f"{model}.signature.yaml",
            "artifacts": {"local": {"file": f"{name}.onnx"}},
            "tables": tables,
            "route": {"targets": [{"engine": "local"}]},
        }
    )
    return Release(decl=decl, path=Path(f"/releases/{name}.yaml"))


def test_a_canary_takes_the_members_below_its_share_and_each_line_draws_apart() -> None:
    feed1, feed2 = _release("f1", "feed", {"item": "v1"}), _release("f2", "feed", {"item": "v2"})
    jobs1, jobs2 = _release("j1", "jobs", {"job": "a"}), _release("j2", "jobs", {"job": "b"})
    in_force = InForce(ReleasePlans(), [Line("feed", feed1, feed2, 0.25), Line("jobs", jobs1, jobs2, 0.5)])
    both = 0
    for member in range(2000):
        feed_canary = assignment_point(f"{CANARY_SALT} feed", member) < 0.25
        jobs_canary = assignment_point(f"{CANARY_SALT} jobs", member) < 0.5
        serving = in_force.serving(member)
        assert serving.model_releases["feed"] == (("f2", "canary") if feed_canary else ("f1", "stable"))
        assert serving.model_releases["jobs"] == (("j2", "canary") if jobs_canary else ("j1", "stable"))
        assert serving.table_pins == {"item": "v2" if feed_canary else "v1", "job": "b" if jobs_canary else "a"}
        assert serving.route("feed") == ("feed@f2" if feed_canary else "feed@f1")
        assert serving.attribution(["feed"]) == serving.model_releases["feed"]
        both += feed_canary and jobs_canary
    assert 0.09 < both / 2000 < 0.16  # independent: about 0.25 x 0.5 of members are in both canaries
    assert in_force.stable.model_releases == {"feed": ("f1", "stable"), "jobs": ("j1", "stable")}


def test_releases_of_two_lines_must_agree_on_shared_tables() -> None:
    feed, jobs = _release("f1", "feed", {"item": "v1", "member": "m1"}), _release("j1", "jobs", {"member": "m2"})
    assert pin_conflicts([feed, jobs]) == ["table member is pinned at m1 by f1 (feed) and at m2 by j1 (jobs)"]
    assert pin_conflicts([feed, _release("f2", "feed", {"member": "m2"})]) == []  # one line: never together
