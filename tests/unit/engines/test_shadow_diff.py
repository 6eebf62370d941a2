"""Shadow diffs: the pure comparison of a shadow answer with the primary's, head by head."""

from __future__ import annotations

import numpy as np
import pytest

from engines.shadow_diff import MAX_UNDESCRIBED_COLUMNS, Incomparable, compare, head_labels

# Eight rows (candidates), three heads with distinct scores, each ordering the rows differently.
SCORES = np.array(
    [
        [0.10, 0.80, 0.33],
        [0.90, 0.20, 0.41],
        [0.30, 0.70, 0.05],
        [0.70, 0.10, 0.62],
        [0.50, 0.60, 0.27],
        [0.20, 0.30, 0.94],
        [0.80, 0.50, 0.18],
        [0.40, 0.40, 0.76],
    ],
    dtype=np.float32,
)
HEADS = {"scores": ["click", "like", "share"]}


def test_identical_answers_differ_in_nothing() -> None:
    result = compare({"scores": SCORES}, {"scores": SCORES.copy()}, HEADS, top_k=3)
    assert result.rows == 8
    assert list(result.heads) == ["click", "like", "share"]
    for head in result.heads.values():
        assert (head.mean_abs_delta, head.max_abs_delta) == (0.0, 0.0)
        assert head.topk_overlap == 1.0
        assert head.kendall_tau == pytest.approx(1.0)


def test_a_head_in_reverse_order_has_tau_minus_one_and_the_others_one() -> None:
    shadow = SCORES.copy()
    shadow[:, 1] = 1.0 - SCORES[:, 1]  # the same scores' reverse ordering for `like` only
    result = compare({"scores": SCORES}, {"scores": shadow}, HEADS, top_k=3)
    assert result.heads["like"].kendall_tau == pytest.approx(-1.0)
    assert result.heads["like"].topk_overlap == 0.0  # its top 3 are the primary's bottom 3
    assert result.heads["click"].kendall_tau == pytest.approx(1.0)
    assert result.heads["share"].kendall_tau == pytest.approx(1.0)
    assert result.heads["click"].topk_overlap == result.heads["share"].topk_overlap == 1.0


def test_adding_a_constant_to_one_head_shows_as_its_delta_and_nowhere_else() -> None:
    shadow = SCORES.copy()
    shadow[:, 2] += 0.1
    result = compare({"scores": SCORES}, {"scores": shadow}, HEADS, top_k=3)
    share = result.heads["share"]
    assert share.mean_abs_delta == pytest.approx(0.1, abs=1e-6)
    assert share.max_abs_delta == pytest.approx(0.1, abs=1e-6)
    assert share.topk_overlap == 1.0  # the same order
    assert share.kendall_tau == pytest.approx(1.0)
    for other in ("click", "like"):
        assert result.heads[other].mean_abs_delta == result.heads[other].max_abs_delta == 0.0


def test_mean_and_max_delta_are_per_head_over_all_rows() -> None:
    shadow = SCORES.copy()
    shadow[3, 0] += 0.4  # one row of one head moves
    result = compare({"scores": SCORES}, {"scores": shadow}, HEADS, top_k=3)
    assert result.heads["click"].max_abs_delta == pytest.approx(0.4, abs=1e-6)
    assert result.heads["click"].mean_abs_delta == pytest.approx(0.4 / 8, abs=1e-6)


def test_topk_overlap_counts_shared_rows_among_the_k_best() -> None:
    primary = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    shadow = np.array([6.0, 4.0, 5.0, 3.0, 2.0, 1.0])  # rows 1 and 2 swap places
    assert compare({"s": primary}, {"s": shadow}, None, top_k=1).heads["s"].topk_overlap == 1.0
    assert compare({"s": primary}, {"s": shadow}, None, top_k=2).heads["s"].topk_overlap == 0.5
    assert compare({"s": primary}, {"s": shadow}, None, top_k=3).heads["s"].topk_overlap == 1.0
    # K is capped by the rows: every row is in the "top 100" of six.
    assert compare({"s": primary}, {"s": -shadow}, None, top_k=100).heads["s"].topk_overlap == 1.0


def test_vectorised_figures_match_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(7)
    rows, k = 60, 10
    primary = rng.normal(size=(rows, 4))
    shadow = primary + rng.normal(scale=0.5, size=(rows, 4))
    result = compare({"x": primary}, {"x": shadow}, None, top_k=k)
    for j in range(4):
        head = result.heads[f"x[{j}]"]
        best = set(np.argsort(-primary[:, j])[:k].tolist())
        shadow_best = set(np.argsort(-shadow[:, j])[:k].tolist())
        assert head.topk_overlap == len(best & shadow_best) / k
        assert head.mean_abs_delta == pytest.approx(np.mean(np.abs(primary[:, j] - shadow[:, j])))
        concordant = discordant = 0
        for a in range(rows):
            for b in range(a + 1, rows):
                sign = np.sign(primary[a, j] - primary[b, j]) * np.sign(shadow[a, j] - shadow[b, j])
                concordant += sign > 0
                discordant += sign < 0
        assert head.kendall_tau == pytest.approx((concordant - discordant) / (rows * (rows - 1) / 2))


def test_undescribed_columns_are_labelled_by_output_and_index() -> None:
    primary: dict[str, np.ndarray] = {"p": SCORES[:, 0], "one": SCORES[:, :1], "multi": SCORES}
    result = compare(primary, {k: v.copy() for k, v in primary.items()}, None, top_k=3)
    assert list(result.heads) == ["p", "one", "multi[0]", "multi[1]", "multi[2]"]
    assert head_labels("multi", 2) == ["multi[0]", "multi[1]"]


def test_with_a_description_only_described_outputs_are_compared() -> None:
    primary: dict[str, np.ndarray] = {"scores": SCORES, "embedding": np.ones((8, 64)), "debug": SCORES[:, 0]}
    shadow: dict[str, np.ndarray] = {
        "scores": SCORES,
        "embedding": np.zeros((8, 32)),
    }  # the embedding differs, debug is missing
    result = compare(primary, shadow, {"scores": ["click", "like", "share"], "debug": []}, top_k=3)
    assert list(result.heads) == ["click", "like", "share"]


def test_undescribed_wide_outputs_are_not_compared() -> None:
    wide = np.ones((8, MAX_UNDESCRIBED_COLUMNS + 1))
    result = compare({"s": SCORES[:, 0], "wide": wide}, {"s": SCORES[:, 0], "wide": wide * 2}, None, top_k=3)
    assert list(result.heads) == ["s"]
    with pytest.raises(Incomparable, match="no output to compare"):
        compare({"wide": wide}, {"wide": wide}, None, top_k=3)


def test_tau_is_none_where_undefined() -> None:
    constant = np.full(8, 0.5)
    assert compare({"s": constant}, {"s": SCORES[:, 0]}, None, top_k=3).heads["s"].kendall_tau is None
    single = compare({"s": np.array([0.3])}, {"s": np.array([0.4])}, None, top_k=3)
    assert single.rows == 1
    assert single.heads["s"].kendall_tau is None
    assert single.heads["s"].topk_overlap == 1.0
    assert single.heads["s"].mean_abs_delta == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("primary", "shadow", "heads", "match"),
    [
        ({"scores": SCORES}, {"other": SCORES}, None, "shadow answer has no output 'scores'"),
        ({"scores": SCORES}, {"scores": SCORES[:5]}, None, r"shaped \(8, 3\) by the primary, \(5, 3\)"),
        ({"scores": SCORES}, {"scores": SCORES[:, :2]}, None, "shaped"),
        ({"s": np.array([0.1, np.nan])}, {"s": np.array([0.1, 0.2])}, None, "primary holds non-finite"),
        ({"s": np.array([0.1, 0.2])}, {"s": np.array([0.1, np.inf])}, None, "shadow holds non-finite"),
        ({"s": np.array(["a", "b"])}, {"s": np.array(["a", "b"])}, None, "not numbers"),
        ({"s": np.ones((2, 2, 2))}, {"s": np.ones((2, 2, 2))}, None, "3 dimensions"),
        ({"s": np.ones(0)}, {"s": np.ones(0)}, None, "no rows"),
        ({"scores": SCORES}, {"scores": SCORES}, {"scores": ["click", "like"]}, "3 columns, described as heads"),
        ({"scores": SCORES}, {"scores": SCORES}, {"absent": ["x"]}, "primary answer has no output 'absent'"),
        ({"a": SCORES, "b": SCORES[:4]}, {"a": SCORES, "b": SCORES[:4]}, None, r"outputs differ in rows: \[4, 8\]"),
    ],
)
def test_incomparable_answers_raise_incomparable(
    primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray], heads: dict[str, list[str]] | None, match: str
) -> None:
    with pytest.raises(Incomparable, match=match):
        compare(primary, shadow, heads, top_k=3)


def test_top_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        compare({"s": SCORES[:, 0]}, {"s": SCORES[:, 0]}, None, top_k=0)
