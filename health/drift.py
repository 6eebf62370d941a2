"""Drift of online sketches from offline ones: PSI, the KS distance and the sketch-aware KS test, per name.

The KS test is datasketches' (`kolmogorov_smirnov::test`: reject when the distance exceeds
c(p) * sqrt((r1 + r2) / (r1 * r2)) + eps1 + eps2, r the values each sketch retains, eps its rank error),
with one change: the distance. `datasketches.ks_test` walks the two sketches' sorted views item by item,
which is wrong on ties: two sketches of the same constant, binary or categorical stream are rejected at any
p (reproduced with datasketches 5.2). Serving features are often discrete (flags, one-hot categories,
counts), so the distance used here is `ks_statistic`, both CDFs evaluated at the same points, which ties
cannot fool; on continuous data it agrees with the library's (tests check both give the same verdicts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from datasketches import kll_floats_sketch
from pydantic import BaseModel, ConfigDict, Field

from health.sketches import Kind, ModelSketches

_DECILES = [i / 10 for i in range(1, 10)]
_PSI_EPSILON = 1e-4  # the share given to an empty bin, so PSI stays finite
_KS_RANKS = np.linspace(0.0, 1.0, 1001).tolist()  # each sketch's quantiles at 0.1% rank steps: where D is taken


class DriftThresholds(BaseModel):
    """When a name's drift raises an alarm: PSI above `psi_max`, or the KS test rejecting "same
    distribution" at significance `ks_p`; never while either side has fewer than `min_samples` values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi_max: Annotated[float, Field(gt=0)] = 0.2
    ks_p: Annotated[float, Field(gt=0, lt=1)] = 0.001
    min_samples: Annotated[int, Field(ge=1)] = 1000


@dataclass(frozen=True)
class Drift:
    """One watched name's online distribution against its offline one. `psi` and `ks_statistic` are NaN
    when either side is empty; `alarm` is False whenever `sufficient` is."""

    name: str
    kind: Kind
    n_offline: int
    n_online: int
    psi: float
    ks_statistic: float
    ks_alarm: bool
    alarm: bool
    sufficient: bool = True

    @property
    def status(self) -> Literal["alarm", "ok", "insufficient data"]:
        if not self.sufficient:
            return "insufficient data"
        return "alarm" if self.alarm else "ok"


@dataclass(frozen=True)
class ModelHealth:
    """The drift of one (model, release) over one window. `samples`: online rows in the window;
    `offline`: whether the release has offline stats for the model (without them nothing is compared)."""

    model: str
    release: str
    samples: int
    drifts: tuple[Drift, ...]
    offline: bool = True
    window_start_s: float = 0.0

    @property
    def healthy(self) -> bool:
        return not any(d.alarm for d in self.drifts)


@dataclass(frozen=True)
class HealthReport:
    """Every watched (model, release), sorted, as of `time_s`."""

    time_s: float
    models: tuple[ModelHealth, ...] = ()

    @property
    def healthy(self) -> bool:
        return all(m.healthy for m in self.models)

    def get(self, model: str, release: str) -> ModelHealth | None:
        return next((m for m in self.models if (m.model, m.release) == (model, release)), None)

    def by_key(self) -> Mapping[tuple[str, str], ModelHealth]:
        return {(m.model, m.release): m for m in self.models}


def evaluate(offline: ModelSketches, online: ModelSketches, thresholds: DriftThresholds) -> list[Drift]:
    """One `Drift` per name watched on both sides, in `online`'s order (features, then heads); a name only
    one side watches (the signature changed between training and serving) is not compared."""
    drifts = []
    for kind, name, sketch in online.named():
        names = offline.features if kind == "feature" else offline.heads
        if name in names:
            drifts.append(drift(name, kind, offline.sketch(kind, name), sketch, thresholds))
    return drifts


def drift(
    name: str, kind: Kind, offline: kll_floats_sketch, online: kll_floats_sketch, thresholds: DriftThresholds
) -> Drift:
    n_offline, n_online = int(offline.n), int(online.n)
    if offline.is_empty() or online.is_empty():
        return Drift(name, kind, n_offline, n_online, math.nan, math.nan, False, False, sufficient=False)
    value = psi(offline, online)
    statistic = ks_statistic(offline, online)
    sufficient = min(n_offline, n_online) >= thresholds.min_samples
    ks_alarm = sufficient and statistic > ks_threshold(offline, online, thresholds.ks_p)
    alarm = ks_alarm or (sufficient and value > thresholds.psi_max)
    return Drift(name, kind, n_offline, n_online, value, statistic, ks_alarm, alarm, sufficient)


def psi(offline: kll_floats_sketch, online: kll_floats_sketch) -> float:
    """Population stability index over the offline deciles: sum over bins of (q - p) ln(q / p), p and q the
    offline and online shares of each bin (empty bins count as a share of 1e-4). Ties collapse bins."""
    edges = np.unique(np.asarray(offline.get_quantiles(_DECILES), np.float64)).tolist()
    expected = np.maximum(np.diff(np.asarray([0.0, *offline.get_cdf(edges)])), _PSI_EPSILON)
    actual = np.maximum(np.diff(np.asarray([0.0, *online.get_cdf(edges)])), _PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_threshold(offline: kll_floats_sketch, online: kll_floats_sketch, p: float) -> float:
    """The KS distance beyond which two sketches differ at significance `p`, the way datasketches'
    sketch-aware test sets it: c(p) * sqrt((r1 + r2) / (r1 * r2)) + eps1 + eps2, c(p) = sqrt(-ln(p / 2) / 2),
    r the retained values (a sketch knows no more than them), eps the sketches' rank errors."""
    r1, r2 = float(offline.num_retained), float(online.num_retained)
    c = math.sqrt(-0.5 * math.log(0.5 * p))
    eps = offline.normalized_rank_error(False) + online.normalized_rank_error(False)
    return c * math.sqrt((r1 + r2) / (r1 * r2)) + float(eps)


def ks_statistic(offline: kll_floats_sketch, online: kll_floats_sketch) -> float:
    """D = max |F_offline(x) - F_online(x)|, x over both sketches' quantiles at 0.1% rank steps."""
    points = np.unique(np.concatenate([offline.get_quantiles(_KS_RANKS), online.get_quantiles(_KS_RANKS)]))
    split = points.tolist()
    left = np.asarray(offline.get_cdf(split, inclusive=True))[:-1]
    right = np.asarray(online.get_cdf(split, inclusive=True))[:-1]
    return float(np.max(np.abs(left - right)))
