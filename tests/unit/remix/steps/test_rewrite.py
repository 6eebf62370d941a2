from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from remix.failures import Category, InvalidRequest
from remix.step import Step
from remix.steps import EXPERIMENT_BUCKET, QUERY, RewriteParams, experiment_bucket

from .conftest import make_ctx

Build = Callable[..., Step]
# Members 1..20, salt "feed", buckets a..d. Changed once, on purpose, when buckets moved to the one
# assignment mechanism shared with route arms and canaries (engines.assignment).
PINNED = "aabbbbcddadadccabdba"


async def test_normalises_keys_and_values_and_applies_defaults(build: Build) -> None:
    ctx = make_ctx(context={" Device ": " IOS ", "Locale": "en-gb", "Colour": "Blue"})
    await build("rewrite")(ctx)
    query = ctx.get(QUERY)
    assert dict(query.context) == {"device": "ios", "locale": "en_GB", "surface": "feed"}
    assert (query.surface, query.locale) == ("feed", "en_GB")
    assert query.ignored_context == ("colour",)
    assert (query.member_id, query.count) == (1, 10)


async def test_defaults_surface_and_locale(build: Build) -> None:
    ctx = make_ctx(context={})
    await build("rewrite", default_surface="home")(ctx)
    assert (ctx.get(QUERY).surface, ctx.get(QUERY).locale) == ("home", "en_US")


async def test_count_zero_means_default_count(build: Build) -> None:
    ctx = make_ctx(count=0)
    await build("rewrite", default_count=25)(ctx)
    assert ctx.get(QUERY).count == 25


async def test_bucket_is_stable_and_written_to_its_own_slot(build: Build) -> None:
    step = build("rewrite", buckets=("a", "b", "c"), salt="s1")
    first, second = make_ctx(member_id=3), make_ctx(member_id=3)
    await step(first)
    await build("rewrite", buckets=("a", "b", "c"), salt="s1")(second)
    assert first.get(EXPERIMENT_BUCKET) == second.get(EXPERIMENT_BUCKET) == first.get(QUERY).experiment_bucket
    assert experiment_bucket(3, "s1", ("a", "b", "c")) == first.get(EXPERIMENT_BUCKET)


def test_bucket_assignment_is_pinned() -> None:
    # A change of hash, salt format or digest would silently reshuffle every running experiment.
    buckets = ("a", "b", "c", "d")
    assert "".join(experiment_bucket(m, "feed", buckets) for m in range(1, 21)) == PINNED


def test_buckets_are_evenly_distributed_and_depend_on_the_salt() -> None:
    buckets = ("control", "t1", "t2", "t3")
    counts = Counter(experiment_bucket(m, "feed", buckets) for m in range(1, 20_001))
    assert set(counts) == set(buckets)
    assert all(abs(n - 5_000) < 300 for n in counts.values()), counts
    moved = sum(experiment_bucket(m, "feed", buckets) != experiment_bucket(m, "other", buckets) for m in range(1000))
    assert 650 < moved < 850  # an independent reshuffle moves about 3/4 of members


async def test_experiment_override_only_when_allowed(build: Build) -> None:
    natural = experiment_bucket(1, "feed", ("control", "treatment"))
    other = "treatment" if natural == "control" else "control"

    ignored = make_ctx(context={"experiment": other})
    await build("rewrite")(ignored)
    assert ignored.get(EXPERIMENT_BUCKET) == natural
    assert ignored.get(QUERY).ignored_context == ("experiment",)

    overridden = make_ctx(context={"Experiment": other.upper()})
    await build("rewrite", allow_experiment_override=True)(overridden)
    assert overridden.get(EXPERIMENT_BUCKET) == other
    assert overridden.get(QUERY).experiment_bucket == other


@pytest.mark.parametrize(
    ("member_id", "count", "context", "message"),
    [
        (1, 10, {"locale": "english"}, "locale 'english' is not of the form ll or ll_CC"),
        (1, 10, {"surface": "feed page"}, "context surface='feed page'"),
        (1, 10, {"locale": "en_US", "LOCALE": "fr_FR"}, "context key 'LOCALE' given twice"),
        (1, 501, {}, "count must be in 0..500, got 501"),
        (1, -1, {}, "count must be in 0..500, got -1"),
        (0, 10, {}, "member_id must be positive, got 0"),
    ],
)
async def test_invalid_requests_are_client_errors(
    build: Build, member_id: int, count: int, context: dict[str, str], message: str
) -> None:
    ctx = make_ctx(member_id=member_id, count=count, context=context)
    with pytest.raises(InvalidRequest, match=r"^rewrite: ") as caught:
        await build("rewrite")(ctx)
    assert message in str(caught.value)
    assert caught.value.category is Category.CLIENT
    assert not ctx.has(QUERY)


async def test_override_naming_no_bucket_is_rejected(build: Build) -> None:
    with pytest.raises(InvalidRequest, match="experiment='nope' names no bucket"):
        await build("rewrite", allow_experiment_override=True)(make_ctx(context={"experiment": "nope"}))


@pytest.mark.parametrize(
    "params",
    [
        {"buckets": ()},
        {"buckets": ("a", "a")},
        {"buckets": ("A",)},
        {"default_locale": "english"},
        {"default_count": 0},
        {"default_count": 600},
        {"unknown": 1},
    ],
)
def test_bad_params_fail_at_build(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RewriteParams.model_validate(params)
