"""Release plans are values: apply, canary, rollback, and their JSON round trip; manifests fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.release_manifest import ReleaseError, load_release
from gateway.release_plan import PlanError, ReleasePlan, ReleasePlans, read_plans, save_plans


def test_apply_moves_the_stable_release_to_history_and_rollback_walks_back() -> None:
    plan = ReleasePlan().applied("/r1").applied("/r2").applied("/r3")
    assert (plan.stable, plan.history) == ("/r3", ("/r1", "/r2"))
    back = plan.rolled_back()
    assert (back.stable, back.history) == ("/r2", ("/r1",))
    assert back.rolled_back() == ReleasePlan(stable="/r1")


def test_rollback_past_the_first_release_is_refused() -> None:
    with pytest.raises(PlanError, match="nothing to roll back"):
        ReleasePlan().applied("/r1").rolled_back()


def test_a_canary_sits_beside_the_stable_release_and_rollback_drops_it_first() -> None:
    plan = ReleasePlan().applied("/r1").applied("/r2", canary_share=0.05)
    assert (plan.stable, plan.canary, plan.canary_share) == ("/r1", "/r2", 0.05)
    assert plan.manifests == ("/r1", "/r2")
    assert plan.rolled_back() == ReleasePlan(stable="/r1")
    promoted = plan.applied("/r2")
    assert (promoted.stable, promoted.canary, promoted.history) == ("/r2", None, ("/r1",))


def test_a_canary_needs_a_stable_release_and_a_share_in_range() -> None:
    with pytest.raises(PlanError, match="needs a stable release"):
        ReleasePlan().applied("/r1", canary_share=0.1)
    with pytest.raises(PlanError, match="fraction"):
        ReleasePlan(stable="/r1").applied("/r2", canary_share=1.5)
    with pytest.raises(PlanError, match="already"):
        ReleasePlan(stable="/r1").applied("/r1", canary_share=0.5)


def test_plans_round_trip_through_the_state_directory(tmp_path: Path) -> None:
    assert read_plans(tmp_path) == ReleasePlans()
    plans = ReleasePlans().applied("feed", "/r1").applied("feed", "/r2", canary_share=0.3).applied("jobs", "/j1")
    save_plans(tmp_path, plans)
    assert read_plans(tmp_path) == plans
    (tmp_path / "releases.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not release plans"):
        read_plans(tmp_path)


def test_release_lines_are_independent_and_rollback_names_its_line() -> None:
    plans = ReleasePlans().applied("feed", "/f1").applied("jobs", "/j1").applied("feed", "/f2")
    assert plans.line("feed") == ReleasePlan(stable="/f2", history=("/f1",))
    assert plans.line("jobs") == ReleasePlan(stable="/j1")
    assert plans.manifests == ("/f2", "/j1")
    with pytest.raises(PlanError, match="name the model to roll back"):
        plans.rolled_back(None)
    model, back = plans.rolled_back("feed")
    assert model == "feed"
    assert back.line("feed") == ReleasePlan(stable="/f1")
    assert back.line("jobs") == ReleasePlan(stable="/j1")
    with pytest.raises(PlanError, match="no release of model 'other'"):
        plans.rolled_back("other")
    only, single = ReleasePlans().applied("jobs", "/j1").applied("jobs", "/j2").rolled_back(None)
    assert (only, single.line("jobs").stable) == ("jobs", "/j1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("release: r1\nmodel: m\n", "signature: Field required"),
        ("[1, 2]", "a release manifest is a mapping"),
        (
            "release: r1\nmodel: m\nsignature: s.yaml\nartifacts: {e: {file: a, model: b}}\n"
            "route: {targets: [{engine: e}]}\n",
            "exactly one",
        ),
        (
            "release: r1\nmodel: m\nsignature: s.yaml\nartifacts: {e: {file: a}}\nroute: {targets: [{engine: x}]}\n",
            "has no artifact",
        ),
        (
            "release: 'bad name'\nmodel: m\nsignature: s.yaml\nartifacts: {e: {file: a}}\n"
            "route: {targets: [{engine: e}]}\n",
            "release",
        ),
        ("release: [", "not valid YAML"),
    ],
)
def test_a_bad_manifest_is_one_line_naming_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ReleaseError) as raised:
        load_release(path)
    assert str(raised.value).startswith("bad.yaml: ")
    assert message in str(raised.value)
    assert str(tmp_path) not in str(raised.value)


def test_a_release_route_targets_its_artifacts(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "release: r7\nmodel: ranker\nsignature: s.yaml\n"
        "artifacts: {local: {file: m.onnx}, triton: {model: ranker, version: '3'}}\n"
        "tables: {item: v2}\nroute: {targets: [{engine: local}], fallback: [{engine: triton}]}\n"
    )
    release = load_release(path)
    route = release.route()
    assert release.route_name == "ranker@r7"
    assert (route.targets[0].engine, route.targets[0].model) == ("local", "ranker@r7")
    assert (route.fallback[0].model, route.fallback[0].version) == ("ranker", "3")
    assert release.file("local") == (tmp_path / "m.onnx").resolve()
    assert release.file("triton") is None
