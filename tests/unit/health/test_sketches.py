from __future__ import annotations

import numpy as np
import pytest

from health import ModelSketches


def _sketches(k: int = 200) -> ModelSketches:
    return ModelSketches(("a", "b"), ("h",), k)


def test_update_counts_rows_and_skips_non_finite_values() -> None:
    sketches = _sketches()
    features = np.array([[1, 10], [2, np.nan], [3, np.inf], [4, 40]], np.float32)
    heads = np.array([[0.5], [-np.inf], [0.7], [0.9]], np.float32)
    sketches.update(features, heads)
    assert sketches.n == 4
    assert sketches.nonfinite.tolist() == [0, 2, 1]
    assert [int(s.n) for _, _, s in sketches.named()] == [4, 2, 3]
    assert sketches.sketch("feature", "b").get_max_value() == 40
    assert sketches.sketch("head", "h").get_min_value() == pytest.approx(0.5)


def test_named_lists_features_then_heads() -> None:
    assert [(kind, name) for kind, name, _ in _sketches().named()] == [
        ("feature", "a"),
        ("feature", "b"),
        ("head", "h"),
    ]
    with pytest.raises(KeyError):
        _sketches().sketch("head", "a")


def test_merge_equals_one_sketch_of_both_streams() -> None:
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((3000, 3)).astype(np.float32), rng.normal(5, 1, (2000, 3)).astype(np.float32)
    left, right, whole = _sketches(), _sketches(), _sketches()
    left.update(first[:, :2], first[:, 2:])
    right.update(second[:, :2], second[:, 2:])
    whole.update(np.vstack([first, second])[:, :2], np.vstack([first, second])[:, 2:])
    left.merge(right)
    assert left.n == whole.n == 5000
    merged = left.sketch("feature", "a").get_quantiles([0.25, 0.5, 0.75])
    direct = whole.sketch("feature", "a").get_quantiles([0.25, 0.5, 0.75])
    # both within KLL's rank error of the truth: compare ranks, not values
    truth = np.sort(np.concatenate([first[:, 0], second[:, 0]]))
    for value, expected in zip([*merged, *direct], [0.25, 0.5, 0.75] * 2, strict=True):
        assert np.searchsorted(truth, value) / truth.size == pytest.approx(expected, abs=0.03)


def test_merging_other_columns_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="different columns"):
        _sketches().merge(ModelSketches(("a",), ("h",), 200))


def test_update_checks_shapes() -> None:
    with pytest.raises(ValueError, match="feature and 1 head columns"):
        _sketches().update(np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="matrices"):
        _sketches().update(np.zeros((2, 2), np.float32), np.zeros((3, 1), np.float32))


def test_serialize_round_trips() -> None:
    sketches = _sketches(k=300)
    rng = np.random.default_rng(1)
    sketches.update(rng.standard_normal((5000, 2)).astype(np.float32), np.full((5000, 1), np.nan, np.float32))
    back = ModelSketches.deserialize(sketches.serialize())
    assert (back.features, back.heads, back.k, back.n) == (("a", "b"), ("h",), 300, 5000)
    assert back.nonfinite.tolist() == [0, 0, 5000]
    assert back.sketch("head", "h").is_empty()
    ranks = [0.1, 0.5, 0.9]
    for kind, name, sketch in sketches.named()[:2]:
        assert back.sketch(kind, name).get_quantiles(ranks) == sketch.get_quantiles(ranks)


@pytest.mark.parametrize(
    "data", [b"not json", b'{"format": "other"}', b'{"format": "quasar.health.sketches/1", "k": 200}']
)
def test_deserialize_rejects_what_is_not_an_envelope(data: bytes) -> None:
    with pytest.raises(ValueError, match="envelope"):
        ModelSketches.deserialize(data)


def test_deserialize_rejects_a_corrupt_sketch() -> None:
    sketches = _sketches()
    sketches.update(np.ones((10, 2), np.float32), np.ones((10, 1), np.float32))
    envelope = sketches.to_json()
    envelope["sketches"][0] = "AAAA"
    with pytest.raises(ValueError, match="corrupt"):
        ModelSketches.from_json(envelope)
