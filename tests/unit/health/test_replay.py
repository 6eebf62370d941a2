"""Replay of captured requests through fake scorers: zero difference, known moves, noise, perturbations."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import orjson
import pytest
from rich.console import Console

from features import FeatureRegistry, ModelSignature, load_registry, load_signatures
from gateway.capture_record import Captured, CapturedCall, CapturedFeed
from health.replay import FunctionScorer, Perturbation, PerturbKind, ReplayError, ReplayReport, replay
from tests.unit.features.product import write_product

# The product's ranker takes one tensor `features` of width 10:
# 0 member_profile.activity (default 0.5) | 1 item_log_popularity (item_stats) | 2 item_age_days (item_meta)
# 3 topic_similarity (member_profile, item_stats) | 4 author_is_connection (member_graph, item_meta)
# 5-6 author_embedding.vector | 7-8 hashtags_pooled (item_meta, hashtag_embedding) | 9 candidate.first_pass_score
WIDTH = 10
WEIGHTS = np.linspace(-1.0, 1.0, WIDTH * 2, dtype=np.float32).reshape(WIDTH, 2)
ROWS = np.array([11, 12, 13, 14, 15], np.int64)
SOURCES = {"network": np.array([11, 12, 13], np.int64), "trending": np.array([13, 14, 15], np.int64)}
UTILITY = {"click": 1.0, "share": 0.5}

TINY_SIGNATURE = """
model: tiny
candidate_entity: item
inputs:
  - {name: features, features: [member_profile.activity]}
outputs:
  - {name: scores, heads: [click, share]}
"""


Declared = tuple[FeatureRegistry, dict[str, ModelSignature]]


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> Declared:
    root = write_product(tmp_path_factory.mktemp("product"))
    (root / "models" / "tiny.signature.yaml").write_text(TINY_SIGNATURE)
    registry = load_registry(root / "features")
    return registry, load_signatures(root / "models", registry)


def linear(features: np.ndarray) -> dict[str, np.ndarray]:
    return {"scores": np.asarray(features @ WEIGHTS, np.float32)}


def honest() -> FunctionScorer:
    return FunctionScorer(lambda call: linear(call.inputs["features"]))


def recording_scorer() -> tuple[FunctionScorer, list[CapturedCall]]:
    """A scorer of `linear` scores that keeps every call it was asked to score, in order."""
    seen: list[CapturedCall] = []

    def recording(call: CapturedCall) -> dict[str, np.ndarray]:
        seen.append(call)
        return linear(call.inputs["features"])

    return FunctionScorer(recording), seen


def capture(request_id: str = "r1", *, seed: int = 1, weights: dict[str, float] | None = None) -> Captured:
    features = np.random.default_rng(seed).normal(size=(len(ROWS), WIDTH)).astype(np.float32)
    call = CapturedCall(
        model="ranker",
        route="ranker",
        target="local_onnx/ranker",
        version="1",
        rows=ROWS,
        inputs={"features": features},
        outputs=linear(features),
    )
    first_pass = replace(call, model="first_pass", target="local_xgboost/first_pass")
    return Captured(
        request_id=request_id,
        member_id=7,
        count=5,
        workflow="feed",
        context={},
        workflow_version="v",
        time_s=0.0,
        release="",
        arm="",
        table_pins={},
        model_routes={},
        table_versions={},
        degraded=False,
        sources=SOURCES,
        calls=(first_pass, call),
        utility_weights=UTILITY if weights is None else weights,
        feed=CapturedFeed(item_id=ROWS, utility=None),
        where=f"test:{request_id}",
    )


def captured_order(captured: Captured) -> list[int]:
    scores = captured.calls[-1].outputs["scores"]
    utility = scores @ np.array([UTILITY["click"], UTILITY["share"]], np.float32)
    return [int(i) for i in np.argsort(-utility, kind="stable")]


def metric(report: ReplayReport, name: str) -> tuple[float, float, bool]:
    (found,) = [m for m in report.metrics if m.metric == name]
    return found.difference.mean, found.noise.mean, found.above_noise


async def test_the_unchanged_scorer_replays_with_exactly_zero_difference(declared: Declared) -> None:
    _, signatures = declared
    scorer = honest()
    report = await replay([capture("a", seed=1), capture("b", seed=2)], scorer, signatures=signatures, top_k=3)
    assert report.zero_difference
    assert not report.differences
    assert scorer.calls == 2 * 3  # primary, secondary, candidate
    for request in report.requests:
        assert (request.difference.topk_overlap, request.difference.kendall_tau, request.difference.rbo) == (1, 1, 1)
        assert dict(request.difference.head_max_abs) == {"click": 0.0, "share": 0.0}
        assert (request.model, request.target, request.rows) == ("ranker", "local_onnx/ranker", 5)
    assert [m.metric for m in report.metrics] == [
        "top-3 overlap",
        "kendall tau",
        "rbo",
        "click mean |Δ|",
        "click max |Δ|",
        "share mean |Δ|",
        "share max |Δ|",
    ]


async def test_a_scorer_swapping_the_top_two_moves_the_ranking_as_expected(declared: Declared) -> None:
    _, signatures = declared
    captured = capture()
    first, second = captured_order(captured)[:2]

    def swapped(call: CapturedCall) -> dict[str, np.ndarray]:
        scores = linear(call.inputs["features"])["scores"].copy()
        scores[[first, second]] = scores[[second, first]]
        return {"scores": scores}

    report = await replay([captured], FunctionScorer(swapped), baseline=honest(), signatures=signatures, top_k=1)
    (request,) = report.requests
    difference = request.difference
    assert difference.topk_overlap == 0.0  # the top 1 is another item
    # one discordant pair among the 5 * 4 / 2 = 10: tau = (9 - 1) / 10
    assert difference.kendall_tau == pytest.approx(0.8)
    # [a, b, c, d, e] against [b, a, c, d, e]: X_1 = 0, X_d = d for d >= 2, so
    # RBO_ext = (1-p)/p * sum_{d=2..5} p^d + p^5 = (p - p^5) + p^5 = p
    assert difference.rbo == pytest.approx(0.9)
    scores = captured.calls[-1].outputs["scores"].astype(np.float64)
    gap = np.abs(scores[first] - scores[second])
    assert difference.head_mean_abs["click"] == pytest.approx(2 * gap[0] / 5)
    assert difference.head_max_abs["share"] == pytest.approx(gap[1])
    assert report.differences == report.metrics  # the noise is zero: any difference is beyond it
    assert not report.zero_difference
    out = io.StringIO()
    report.render(Console(file=out, width=120))
    assert "7 of 7 metrics differ beyond the noise" in out.getvalue()
    assert out.getvalue().count("differs │") == 7


async def test_differences_within_the_noise_are_not_reported(declared: Declared) -> None:
    _, signatures = declared
    jitter = np.random.default_rng(5)

    def noisy(call: CapturedCall) -> dict[str, np.ndarray]:
        scores = linear(call.inputs["features"])["scores"]
        return {"scores": scores + jitter.normal(scale=1e-3, size=scores.shape).astype(np.float32)}

    candidate = FunctionScorer(lambda call: {"scores": linear(call.inputs["features"])["scores"] + np.float32(1e-5)})
    captures = [capture(f"r{i}", seed=i) for i in range(8)]
    report = await replay(captures, candidate, baseline=FunctionScorer(noisy), signatures=signatures, repeats=2)
    difference, noise, above = metric(report, "click mean |Δ|")
    assert difference == pytest.approx(1e-5, rel=1e-2)
    assert noise > 1e-4
    assert not above
    assert not report.zero_difference


async def test_drop_feature_sets_exactly_its_columns_to_the_declared_default(declared: Declared) -> None:
    registry, signatures = declared
    scorer, calls = recording_scorer()
    captured = capture()
    original = captured.calls[-1].inputs["features"].copy()
    report = await replay(
        [captured],
        scorer,
        signatures=signatures,
        registry=registry,
        perturb=Perturbation.parse("drop-feature:member_profile.activity"),
    )
    perturbed = calls[-1].inputs["features"]  # the candidate's call comes after the baseline's two
    assert np.array_equal(calls[0].inputs["features"], original)
    assert np.all(perturbed[:, 0] == np.float32(0.5))
    assert np.array_equal(perturbed[:, 1:], original[:, 1:])
    assert np.array_equal(captured.calls[-1].inputs["features"], original)  # the capture is left as it was
    assert report.perturbation == "drop-feature:member_profile.activity"
    assert not report.zero_difference


@pytest.mark.parametrize(
    ("table", "columns"),
    [("item_stats", [1, 3]), ("hashtag_embedding", [7, 8]), ("item_meta", [2, 4, 7, 8]), ("author_embedding", [5, 6])],
)
async def test_zero_table_zeroes_every_feature_read_from_it(declared: Declared, table: str, columns: list[int]) -> None:
    registry, signatures = declared
    scorer, calls = recording_scorer()
    captured = capture()
    original = captured.calls[-1].inputs["features"]
    await replay(
        [captured],
        scorer,
        signatures=signatures,
        registry=registry,
        perturb=Perturbation("zero-table", table),
    )
    others = [c for c in range(WIDTH) if c not in columns]
    seen = calls[-1].inputs["features"]
    assert np.all(seen[:, columns] == 0.0)
    assert np.array_equal(seen[:, others], original[:, others])


async def test_drop_source_removes_the_rows_only_that_source_produced(declared: Declared) -> None:
    _, signatures = declared
    scorer, seen = recording_scorer()

    captured = capture()
    report = await replay([captured], scorer, signatures=signatures, perturb=Perturbation("drop-source", "trending"))
    candidate = seen[-1]
    assert candidate.rows is not None
    assert candidate.rows.tolist() == [11, 12, 13]  # 13 came from the network too: kept
    assert np.array_equal(candidate.inputs["features"], captured.calls[-1].inputs["features"][:3])
    (request,) = report.requests
    assert (request.rows, request.rows_removed) == (3, 2)
    assert request.difference.head_max_abs["click"] == 0.0  # the rows kept score as captured
    kept_in_order = [i for i in captured_order(captured) if i < 3]
    assert request.difference.kendall_tau == 1.0  # the rows kept keep their order...
    assert request.difference.rbo < 1.0  # ...but two items are gone
    assert kept_in_order  # a sanity check of the fixture


async def test_unknown_names_are_errors_naming_the_nearest(declared: Declared) -> None:
    registry, signatures = declared

    async def perturbed(kind: PerturbKind, name: str) -> ReplayReport:
        perturbation = Perturbation(kind, name)
        return await replay([capture()], honest(), signatures=signatures, registry=registry, perturb=perturbation)

    with pytest.raises(ReplayError, match=r"unknown feature 'member_profile\.activty'.*member_profile\.activity"):
        await perturbed("drop-feature", "member_profile.activty")
    with pytest.raises(ReplayError, match="item_log_popularity' is derived"):
        await perturbed("drop-feature", "item_log_popularity")
    with pytest.raises(ReplayError, match=r"does not take feature 'item_stats\.popularity'"):
        await perturbed("drop-feature", "item_stats.popularity")
    with pytest.raises(ReplayError, match=r"unknown table 'item_stat'.*item_stats"):
        await perturbed("zero-table", "item_stat")
    with pytest.raises(ReplayError, match=r"no capture has source 'trendin'.*trending"):
        await perturbed("drop-source", "trendin")
    with pytest.raises(ReplayError, match=r"unknown model 'rankr'.*ranker"):
        await replay([capture()], honest(), signatures=signatures, model="rankr")
    with pytest.raises(ValueError, match="expected drop-feature:NAME"):
        Perturbation.parse("drop-column:x")


async def test_a_table_the_model_reads_nothing_from_is_an_error(declared: Declared) -> None:
    registry, signatures = declared
    tiny = capture()
    call = replace(tiny.calls[-1], model="tiny", inputs={"features": tiny.calls[-1].inputs["features"][:, :1]})
    tiny = replace(tiny, calls=(call,))
    with pytest.raises(
        ReplayError, match=r"model 'tiny' reads nothing from table 'item_stats' \(it reads \['member_profile'\]\)"
    ):
        await replay(
            [tiny],
            FunctionScorer(lambda c: {"scores": np.zeros((5, 2), np.float32)}),
            signatures=signatures,
            registry=registry,
            perturb=Perturbation("zero-table", "item_stats"),
        )


async def test_requests_without_what_a_replay_needs_are_skipped_with_why(declared: Declared) -> None:
    _, signatures = declared
    no_weights = capture("fallback", weights={})
    no_calls = replace(capture("nothing"), calls=())
    report = await replay([no_weights, no_calls, capture("ok")], honest(), signatures=signatures)
    assert [r.request_id for r in report.requests] == ["ok"]
    assert dict(report.skipped) == {
        "fallback": "no utility weights (the rank step fell back to first-pass order)",
        "nothing": "no model call",
    }
    unsigned = capture()
    unsigned = replace(unsigned, calls=unsigned.calls[:1])  # only the first pass, which has no signature here
    report = await replay([unsigned], honest(), signatures=signatures)
    assert report.requests == ()
    assert report.skipped == (("r1", "no signature for model 'first_pass'"),)
    chosen = await replay([capture()], honest(), signatures=signatures, model="ranker")
    assert [r.model for r in chosen.requests] == ["ranker"]


async def test_a_scorer_answer_that_does_not_fit_the_signature_is_an_error(declared: Declared) -> None:
    _, signatures = declared
    wrong = FunctionScorer(lambda call: {"logits": np.zeros((5, 2), np.float32)})
    with pytest.raises(ReplayError, match=r"test:r1: baseline ranker: no output 'scores' \(got \['logits'\]\)"):
        await replay([capture()], wrong, signatures=signatures)


async def test_the_report_renders_as_a_table_and_as_json(declared: Declared) -> None:
    _, signatures = declared
    report = await replay([capture(), capture("fallback", weights={})], honest(), signatures=signatures, top_k=2)
    out = io.StringIO()
    report.render(Console(file=out, width=160))
    text = out.getvalue()
    assert "top-2 overlap" in text
    assert "differs │" not in text
    assert "zero difference" in text
    assert "skipped 1 request(s): no utility weights" in text
    document = orjson.loads(orjson.dumps(report.to_json()))
    assert document["zero_difference"] is True
    assert document["replayed"] == 1
    assert document["requests"][0]["difference"]["rbo"] == 1.0
    assert document["metrics"][0]["difference"]["mean"] == 1.0
    assert math.isclose(document["metrics"][2]["noise"]["min"], 1.0)
