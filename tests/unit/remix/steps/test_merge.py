from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from remix.context import Context
from remix.step import Step
from remix.steps import MERGED, MergeParams, source_key
from remix.steps.candidates import Candidates, ItemType, RowsOf

from .conftest import make_ctx

Build = Callable[..., Step]


def cands(name: str, items: Sequence[int], scores: Sequence[float]) -> Candidates:
    ids = np.array(items, dtype=np.int64)
    return Candidates.from_source(
        name,
        item_id=ids,
        item_type=np.full(len(ids), ItemType.POST, np.int8),
        author_id=ids * 10,
        first_pass_score=np.array(scores, dtype=np.float32),
    )


async def merge(build: Build, present: dict[str, Candidates], **params: object) -> Candidates:
    ctx = make_ctx()
    for name, c in present.items():
        ctx.set(source_key(name), c)
    await build("merge", **params)(ctx)
    return ctx.get(MERGED)


async def test_dedups_keeping_every_producer_the_first_in_priority_and_the_best_score(build: Build) -> None:
    merged = await merge(
        build,
        {
            "a": cands("a", [5, 1], [0.2, 0.5]),
            "b": cands("b", [7, 3], [0.9, 0.1]),
            "c": cands("c", [7, 5, 9], [0.3, 0.6, 0.4]),
        },
        sources=["a", "b", "c"],
    )
    assert merged.source_names == ("a", "b", "c")
    rows = {
        item: (merged.source_names[src], merged.source_list(r), score)
        for r, (item, src, score) in enumerate(
            zip(merged.item_id.tolist(), merged.source.tolist(), merged.first_pass_score.tolist(), strict=True)
        )
    }
    assert rows == {
        7: ("b", ["b", "c"], pytest.approx(0.9)),
        5: ("a", ["a", "c"], pytest.approx(0.6)),
        1: ("a", ["a"], pytest.approx(0.5)),
        9: ("c", ["c"], pytest.approx(0.4)),
        3: ("b", ["b"], pytest.approx(0.1)),
    }
    assert merged.item_id.tolist() == [7, 5, 1, 9, 3]  # by best first-pass score
    assert merged.sources_mask.tolist() == [0b110, 0b101, 0b001, 0b100, 0b010]
    np.testing.assert_array_equal(merged.author_id, merged.item_id * 10)


async def test_primary_source_follows_the_configured_priority_not_the_score(build: Build) -> None:
    present = {"b": cands("b", [4], [0.9]), "c": cands("c", [4], [0.1])}
    merged = await merge(build, present, sources=["c", "b"])
    assert merged.source_names[int(merged.source[0])] == "c"
    assert merged.source_list(0) == ["c", "b"]
    assert merged.first_pass_score.tolist() == [pytest.approx(0.9)]


async def test_quota_keeps_a_sources_best_before_dedup(build: Build) -> None:
    present = {"a": cands("a", [1, 2, 3, 4], [0.1, 0.9, 0.5, 0.7]), "b": cands("b", [1], [0.05])}
    merged = await merge(build, present, sources=["a", "b"], quotas={"a": 2})
    assert merged.item_id.tolist() == [2, 4, 1]
    assert merged.source_list(2) == ["b"]  # item 1 survives only through b, which has no quota


async def test_cap_keeps_the_best_first_pass_scores(build: Build) -> None:
    present = {"a": cands("a", [1, 2, 3], [0.3, 0.8, 0.5]), "b": cands("b", [4, 5], [0.9, 0.1])}
    merged = await merge(build, present, sources=["a", "b"], max_candidates=3)
    assert merged.item_id.tolist() == [4, 2, 3]


async def test_equal_scores_order_by_item_id(build: Build) -> None:
    merged = await merge(build, {"a": cands("a", [9, 2, 5], [0.5, 0.5, 0.5])}, sources=["a"], max_candidates=2)
    assert merged.item_id.tolist() == [2, 5]


async def test_missing_sources_are_tolerated_and_keep_their_bits(build: Build) -> None:
    merged = await merge(build, {"b": cands("b", [3, 8], [0.2, 0.4])}, sources=["a", "b", "c"])
    assert merged.source_names == ("a", "b", "c")
    assert merged.item_id.tolist() == [8, 3]
    assert merged.source.tolist() == [1, 1]
    assert merged.sources_mask.tolist() == [0b010, 0b010]


async def test_no_source_answered_gives_an_empty_set(build: Build) -> None:
    merged = await merge(build, {}, sources=["a", "b"])
    assert len(merged) == 0
    assert merged.source_names == ("a", "b")


def test_declares_sources_as_optional_reads(build: Build) -> None:
    step = build("merge", sources=["network", "jobs"])
    assert step.reads == frozenset()
    assert step.optional_reads == {source_key("network"), source_key("jobs")}
    assert step.writes == {MERGED}


async def test_matches_a_reference_merge_on_random_overlapping_sources(build: Build) -> None:
    rng = np.random.default_rng(3)
    names = ["s0", "s1", "s2", "s3"]
    quotas = {"s0": 150, "s2": 80}
    present: dict[str, Candidates] = {}
    for name in names:
        items = rng.choice(np.arange(1, 900), size=300, replace=False)
        present[name] = cands(name, items.tolist(), rng.random(300).tolist())
    merged = await merge(build, present, sources=names, quotas=quotas, max_candidates=500)

    expected: dict[int, tuple[int, int, float]] = {}  # item -> (primary, mask, score)
    for index, name in enumerate(names):
        c = present[name]
        rows = sorted(range(len(c)), key=lambda r: -c.first_pass_score[r])[: quotas.get(name, len(c))]
        for r in rows:
            item, score = int(c.item_id[r]), float(c.first_pass_score[r])
            primary, mask, best = expected.get(item, (index, 0, score))
            expected[item] = (primary, mask | 1 << index, max(best, score))
    top = sorted(expected, key=lambda i: (-expected[i][2], i))[:500]

    assert merged.item_id.tolist() == top
    assert merged.source.tolist() == [expected[i][0] for i in top]
    assert merged.sources_mask.tolist() == [expected[i][1] for i in top]
    np.testing.assert_array_equal(merged.first_pass_score, np.array([expected[i][2] for i in top], np.float32))


@pytest.mark.parametrize(
    "params",
    [
        {"sources": []},
        {"sources": ["a", "a"]},
        {"sources": [f"s{i}" for i in range(33)]},
        {"sources": ["a"], "quotas": {"b": 3}},
        {"sources": ["a"], "quotas": {"a": 0}},
        {"sources": ["a"], "max_candidates": 0},
        {"sources": ["merged"]},
    ],
)
def test_bad_merge_params_fail_at_build(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MergeParams.model_validate(params)


async def test_under_overload_quality_narrows_the_cap_and_marks_the_answer(build: Build) -> None:
    ctx = make_ctx()
    ctx = Context(request=replace(ctx.request, quality=0.5), budget=ctx.budget)
    ctx.set(source_key("a"), cands("a", [1, 2, 3, 4, 5], [0.1, 0.5, 0.3, 0.4, 0.2]))
    await build("merge", sources=["a"], max_candidates=4)(ctx)
    assert ctx.get(MERGED).item_id.tolist() == [2, 4], "ceil(4 * 0.5) best by first-pass score"
    assert [f.reason for f in ctx.failures] == ["overload: second pass narrowed to 2 candidates"]


async def test_a_narrowed_cap_that_removes_nothing_does_not_degrade(build: Build) -> None:
    ctx = make_ctx()
    ctx = Context(request=replace(ctx.request, quality=0.5), budget=ctx.budget)
    ctx.set(source_key("a"), cands("a", [1, 2], [0.1, 0.5]))
    await build("merge", sources=["a"], max_candidates=4)(ctx)
    assert len(ctx.get(MERGED)) == 2
    assert not ctx.degraded


def batch_views(rng: np.random.Generator, sizes: Sequence[int]) -> tuple[dict[str, np.ndarray], list[Candidates]]:
    """Sources that scored in one batch: each carries a `RowsOf` view of the batch's feature columns."""
    total = sum(sizes)
    columns = {"a": rng.random((total, 3)).astype(np.float32), "b": rng.random((total, 1)).astype(np.float32)}
    parts, start = [], 0
    for index, size in enumerate(sizes):
        items = rng.choice(np.arange(1, 400), size=size, replace=False)
        kept = rng.permutation(size)[: size // 2]  # a source keeps some of its batch rows, in its own order
        part = cands(f"s{index}", items[kept].tolist(), rng.random(len(kept)).tolist())
        parts.append(replace(part, features=RowsOf(columns, ("a", "b"), kept + start)))
        start += size
    return columns, parts


async def test_features_viewing_one_scoring_batch_merge_into_one_view_equal_to_copies(build: Build) -> None:
    rng = np.random.default_rng(5)
    _, parts = batch_views(rng, [120, 90, 60])
    copies = [replace(p, features={name: p.features[name] for name in p.features}) for p in parts]
    names = [f"s{i}" for i in range(3)]
    viewed = await merge(build, dict(zip(names, parts, strict=True)), sources=names, max_candidates=80)
    copied = await merge(build, dict(zip(names, copies, strict=True)), sources=names, max_candidates=80)

    assert isinstance(viewed.features, RowsOf)  # nothing gathered yet
    assert sorted(viewed.features) == sorted(copied.features) == ["a", "b"]
    for name in ("a", "b"):
        np.testing.assert_array_equal(viewed.features[name], copied.features[name])
    later = np.array([5, 0, 17], np.int64)  # a later step (filter) takes rows: still the same values
    np.testing.assert_array_equal(viewed.take(later).features["a"], copied.take(later).features["a"])


async def test_features_of_different_batches_merge_as_copies_of_the_names_all_carry(build: Build) -> None:
    rng = np.random.default_rng(6)
    _, (first,) = batch_views(rng, [100])
    _, (second,) = batch_views(rng, [100])
    second = replace(second, source_names=("s1",), features={"a": second.features["a"]})  # another batch, fewer names
    merged = await merge(build, {"s0": first, "s1": second}, sources=["s0", "s1"])

    assert not isinstance(merged.features, RowsOf)
    assert list(merged.features) == ["a"]
    assert merged.features["a"].shape == (len(merged), 3)


async def test_sources_that_all_answered_nothing_give_an_empty_set(build: Build) -> None:
    merged = await merge(build, {"a": cands("a", [], []), "b": cands("b", [], [])}, sources=["a", "b"])
    assert len(merged) == 0
    assert merged.source_names == ("a", "b")


async def test_a_source_that_found_nothing_does_not_drop_the_features_the_others_carry(build: Build) -> None:
    rng = np.random.default_rng(7)
    _, parts = batch_views(rng, [120, 90])
    present = {"s0": parts[0], "s1": parts[1], "s2": Candidates.empty(("s2",))}
    merged = await merge(build, present, sources=["s0", "s1", "s2"], max_candidates=50)
    assert isinstance(merged.features, RowsOf)
    assert sorted(merged.features) == ["a", "b"]


def test_a_batch_view_answers_membership_without_gathering_a_column() -> None:
    class CountedColumns(dict[str, np.ndarray]):
        reads = 0

        def __getitem__(self, name: str) -> np.ndarray:
            self.reads += 1
            return super().__getitem__(name)

    columns = CountedColumns(a=np.arange(12.0).reshape(6, 2), hidden=np.zeros((6, 1)))
    view = RowsOf(columns, ("a",), np.array([4, 1], np.int64))

    assert "a" in view
    assert "hidden" not in view  # only the view's names count
    assert "z" not in view
    assert columns.reads == 0
    np.testing.assert_array_equal(view["a"], [[8.0, 9.0], [2.0, 3.0]])
