from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from datasketches import ks_test
from pydantic import ValidationError

from health import Drift, DriftThresholds, ModelSketches, evaluate

FEATURES = tuple(f"f{i}" for i in range(5))
HEADS = ("h0", "h1")

# Why these sizes. The sketch-aware KS test (datasketches' threshold, see health.drift) rejects when the
# CDF distance exceeds c(p) * sqrt((r1 + r2) / (r1 * r2)) + eps1 + eps2, r being the values each sketch
# *retains*: with k=8000, ~21k (offline, 200k rows) and ~14k (online, 50k rows), eps ~0.04%, so at p=0.001
# it takes a distance of ~0.022, while a 0.1 sigma shift of N(0, 1) moves the CDF by 0.040 (measured:
# >= 0.0355 over 160 seeded runs) and unshifted data stays below ~0.011. At datasketches' default k=200 the
# same shift is invisible (~0.15 needed); the product default (k=4000, ~0.030) sees it with less margin.
K = 8000
OFFLINE_ROWS = 200_000
ONLINE_ROWS = 50_000


@pytest.fixture(scope="module")
def offline() -> ModelSketches:
    rng = np.random.default_rng(20240601)
    sketches = ModelSketches(FEATURES, HEADS, K)
    sketches.update(
        rng.standard_normal((OFFLINE_ROWS, 5)).astype(np.float32),
        rng.standard_normal((OFFLINE_ROWS, 2)).astype(np.float32),
    )
    return sketches


def _online(seed: int, shifted: str | None, shift: float = 0.1, rows: int = ONLINE_ROWS) -> ModelSketches:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((rows, 5)).astype(np.float32)
    heads = rng.standard_normal((rows, 2)).astype(np.float32)
    if shifted in FEATURES:
        features[:, FEATURES.index(shifted)] += shift
    elif shifted in HEADS:
        heads[:, HEADS.index(shifted)] += shift
    sketches = ModelSketches(FEATURES, HEADS, K)
    sketches.update(features, heads)
    return sketches


@pytest.mark.parametrize(("seed", "shifted"), [(1, "f2"), (2, "f0"), (3, "h1"), (4, "h0"), (5, None), (6, None)])
def test_a_tenth_of_a_sigma_raises_the_shifted_names_alarm_only(
    offline: ModelSketches, seed: int, shifted: str | None
) -> None:
    drifts = evaluate(offline, _online(seed, shifted), DriftThresholds())
    assert [d.name for d in drifts] == [*FEATURES, *HEADS]
    assert [d.kind for d in drifts] == ["feature"] * 5 + ["head"] * 2
    assert {d.name for d in drifts if d.alarm} == ({shifted} if shifted else set())
    assert all(d.ks_alarm == d.alarm for d in drifts)  # at 0.1 sigma PSI stays far below 0.2: KS sees it
    online = _online(seed, shifted)
    for kind, name, sketch in online.named():  # on continuous data, the verdicts of datasketches' own test
        assert ks_test(offline.sketch(kind, name), sketch, 0.001) == (name == shifted)
    for d in drifts:
        assert (d.n_offline, d.n_online) == (OFFLINE_ROWS, ONLINE_ROWS)
        if d.name == shifted:
            assert d.ks_statistic == pytest.approx(0.04, abs=0.01)  # Phi(0.1) - Phi(0) = 0.0398
            assert 0.003 < d.psi < 0.03
        else:
            assert d.ks_statistic < 0.015
            assert d.psi < 0.002


def test_a_large_shift_raises_psi_above_its_threshold(offline: ModelSketches) -> None:
    drifts = {d.name: d for d in evaluate(offline, _online(7, "f1", shift=1.0, rows=5000), DriftThresholds())}
    assert drifts["f1"].psi > 0.2
    assert drifts["f1"].alarm
    assert drifts["f1"].ks_statistic == pytest.approx(0.383, abs=0.03)  # Phi(1) - Phi(0) = 0.3413 +- sampling
    only_psi = DriftThresholds(ks_p=1e-300)  # a KS test that never rejects
    assert {d.name for d in evaluate(offline, _online(7, "f1", 1.0, 5000), only_psi) if d.alarm} == {"f1"}


def test_identical_sketches_do_not_drift(offline: ModelSketches) -> None:
    for drift in evaluate(offline, offline, DriftThresholds()):
        assert drift.psi == pytest.approx(0.0, abs=1e-12)
        assert drift.ks_statistic == 0.0
        assert not drift.alarm
        assert drift.status == "ok"


def test_below_min_samples_there_is_no_alarm(offline: ModelSketches) -> None:
    drifts = evaluate(offline, _online(8, "f0", shift=3.0, rows=999), DriftThresholds(min_samples=1000))
    shifted = drifts[0]
    assert shifted.psi > 1
    assert shifted.ks_statistic > 0.5
    assert all(not d.alarm and not d.ks_alarm and d.status == "insufficient data" for d in drifts)
    assert evaluate(offline, _online(8, "f0", 3.0, 999), DriftThresholds(min_samples=999))[0].alarm


def test_an_empty_side_has_no_measure() -> None:
    empty = ModelSketches(FEATURES, HEADS, 200)
    drift = evaluate(empty, _online(9, None, rows=2000), DriftThresholds())[0]
    assert math.isnan(drift.psi)
    assert math.isnan(drift.ks_statistic)
    assert drift == Drift("f0", "feature", 0, 2000, drift.psi, drift.ks_statistic, False, False, sufficient=False)


def test_names_only_one_side_watches_are_not_compared(offline: ModelSketches) -> None:
    online = ModelSketches(("f1", "new_feature"), ("h1",), 200)
    online.update(np.zeros((10, 2), np.float32), np.zeros((10, 1), np.float32))
    assert [(d.kind, d.name) for d in evaluate(offline, online, DriftThresholds())] == [
        ("feature", "f1"),
        ("head", "h1"),
    ]


def test_thresholds_are_validated_and_frozen() -> None:
    with pytest.raises(ValidationError):
        DriftThresholds(psi_maximum=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        DriftThresholds(ks_p=1.5)
    thresholds = DriftThresholds()
    assert (thresholds.psi_max, thresholds.ks_p, thresholds.min_samples) == (0.2, 0.001, 1000)
    with pytest.raises(ValidationError):
        thresholds.psi_max = 0.5  # type: ignore[misc]


def _discrete(values: np.ndarray, k: int = 1000) -> ModelSketches:
    sketches = ModelSketches(("x",), (), k)
    sketches.update(values.astype(np.float32).reshape(-1, 1), np.zeros((values.size, 0), np.float32))
    return sketches


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: np.ones(n),  # a constant
        lambda rng, n: rng.random(n) < 0.3,  # a flag
        lambda rng, n: rng.integers(0, 4, n),  # a category
    ],
    ids=["constant", "binary", "categorical"],
)
def test_ties_do_not_fool_the_ks_test(draw: Callable[[np.random.Generator, int], np.ndarray]) -> None:
    rng = np.random.default_rng(10)
    offline, online = _discrete(draw(rng, 200_000)), _discrete(draw(rng, 5000))
    (drift,) = evaluate(offline, online, DriftThresholds())
    assert not drift.ks_alarm
    assert not drift.alarm
    assert drift.ks_statistic < 0.03


def test_a_discrete_shift_is_seen() -> None:
    rng = np.random.default_rng(11)
    offline, online = _discrete(rng.random(200_000) < 0.3), _discrete(rng.random(20_000) < 0.36)
    (drift,) = evaluate(offline, online, DriftThresholds())
    assert drift.ks_statistic == pytest.approx(0.06, abs=0.01)  # P(x <= 0) = 0.7 offline, 0.64 online
    assert drift.ks_alarm
