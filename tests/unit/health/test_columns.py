from __future__ import annotations

import numpy as np
import pytest

from health import watched_columns
from tests.unit.health.model import FEATURES, HEADS, call, signature


def test_watches_float_features_and_every_head_skipping_ids() -> None:
    columns = watched_columns(signature())
    assert columns.features == FEATURES
    assert columns.heads == HEADS
    assert [(s.tensor, s.start, s.width, s.watch) for s in columns.spans] == [
        ("features", 0, 1, "value"),
        ("features", 1, 3, "norm"),
        ("features", 4, 1, "value"),
        ("features", 5, 3, "category"),
        ("first_pass", 0, 1, "value"),
    ]
    assert columns.head_columns == (("scores", 0), ("scores", 1), ("dwell", 0))


def test_values_are_columns_vector_norms_categories_and_heads() -> None:
    inputs, outputs = call(np.random.default_rng(1), 40)
    features, heads = watched_columns(signature()).values(inputs, outputs)
    assert features.dtype == np.float32
    assert heads.dtype == np.float32
    assert features.shape == (40, 5)
    assert heads.shape == (40, 3)
    matrix = inputs["features"]
    np.testing.assert_array_equal(features[:, 0], matrix[:, 0])
    np.testing.assert_allclose(features[:, 1], np.linalg.norm(matrix[:, 1:4], axis=1), rtol=1e-6)
    np.testing.assert_array_equal(features[:, 2], matrix[:, 4])
    hot = matrix[:, 5:8]
    np.testing.assert_array_equal(features[:, 3], np.where(hot.any(axis=1), hot.argmax(axis=1) + 1, 0))
    assert set(features[:, 3].tolist()) <= {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(features[:, 4], inputs["first_pass"])
    np.testing.assert_array_equal(heads[:, :2], outputs["scores"])
    np.testing.assert_array_equal(heads[:, 2], outputs["dwell"])


def test_a_single_head_output_may_be_a_column() -> None:
    inputs, outputs = call(np.random.default_rng(2), 5)
    as_column = {**outputs, "dwell": outputs["dwell"].reshape(5, 1)}
    _, heads = watched_columns(signature()).values(inputs, as_column)
    np.testing.assert_array_equal(heads[:, 2], outputs["dwell"])


def test_an_empty_call_gives_empty_matrices() -> None:
    inputs, outputs = call(np.random.default_rng(3), 0)
    features, heads = watched_columns(signature()).values(inputs, outputs)
    assert features.shape == (0, 5)
    assert heads.shape == (0, 3)


def test_tensors_that_do_not_fit_are_value_errors() -> None:
    columns = watched_columns(signature())
    inputs, outputs = call(np.random.default_rng(4), 5)
    with pytest.raises(ValueError, match="row counts"):
        columns.values(inputs, {**outputs, "dwell": outputs["dwell"][:4]})
    with pytest.raises(ValueError, match="no input tensor 'first_pass'"):
        columns.values({k: v for k, v in inputs.items() if k != "first_pass"}, outputs)
    with pytest.raises(ValueError, match="needs"):
        columns.values({**inputs, "features": inputs["features"][:, :3]}, outputs)
