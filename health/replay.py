"""Replay captured requests through a model and measure how much their ranking moves.

For each captured request (`gateway.capture_record`), one model call is replayed (`model`, default the
request's last call: the second pass): its captured input tensors, bit for bit, go to a `Scorer`; the
outputs give each head's scores, the captured UTILITY_WEIGHTS the utility and the order, exactly as the
rank step computes them (`remix.steps.rank`). That order is compared with the captured one (the captured
outputs through the same computation, over the same rows): top-K overlap, Kendall's tau, rank-biased
overlap, and per-head score deltas.

Noise, as Diffy does it: the baseline scorer scores the captured inputs twice (primary and secondary);
how far those two disagree is what the scoring path itself varies (nondeterministic kernels, batching). A
metric is reported as differing only when the candidate's difference from the capture exceeds that noise
(see `ReplayReport`). Replaying the captured target, unchanged, gives exactly zero difference.

A `Perturbation` replays modified inputs through the same scorer instead, to see how much the ranking
depends on something: `drop-feature:NAME` (the feature's columns set to its declared default),
`drop-source:NAME` (rows whose item came only from that source removed), `zero-table:TABLE` (the columns
of every feature read from the table, derived features computed from it included, set to 0).

The parts live in their own modules: the perturbations in `health.perturbation`, the comparison of two
rankings in `health.comparison`, the report in `health.replay_report` (and `ReplayError` in
`health.replay_error`); this module runs the replay and re-exports their public names.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from features.errors import nearest
from features.registry import FeatureRegistry
from features.signature import ModelSignature
from gateway.capture_record import Captured, CapturedCall
from health.comparison import F32, Comparison, _identity, _worst, compare, head_matrix, utility_order
from health.perturbation import (
    PERTURB_KINDS,
    ColumnEdit,
    Perturbation,
    PerturbKind,
    apply_column_edits,
    column_edits,
    rows_only_from,
)
from health.replay_error import ReplayError
from health.replay_report import MetricSummary, ReplayReport, RequestReplay, Summary, _summaries
from remix.steps.rank import weight_vector

__all__ = [
    "F32",
    "PERTURB_KINDS",
    "ColumnEdit",
    "Comparison",
    "FunctionScorer",
    "MetricSummary",
    "PerturbKind",
    "Perturbation",
    "ReplayError",
    "ReplayReport",
    "RequestReplay",
    "Scorer",
    "Summary",
    "apply_column_edits",
    "column_edits",
    "compare",
    "head_matrix",
    "replay",
    "rows_only_from",
    "utility_order",
]


class Scorer(Protocol):
    """Scores one captured call's inputs (`call.inputs`, possibly perturbed) and returns the outputs by
    name, as the model's signature declares them. Raises on failure (an engine error), never returns a
    partial answer."""

    async def score(self, call: CapturedCall) -> dict[str, np.ndarray]: ...


class FunctionScorer:
    """A `Scorer` computing outputs with a plain function of the call (the fake for tests)."""

    def __init__(self, fn: Callable[[CapturedCall], Mapping[str, np.ndarray]]) -> None:
        self._fn = fn
        self.calls = 0

    async def score(self, call: CapturedCall) -> dict[str, np.ndarray]:
        self.calls += 1
        return dict(self._fn(call))


# -- replay -------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    scorer: Scorer
    baseline: Scorer
    signatures: Mapping[str, ModelSignature]
    registry: FeatureRegistry | None
    model: str | None
    top_k: int
    perturbation: Perturbation | None
    repeats: int
    p: float
    edits: dict[str, list[ColumnEdit]] = field(default_factory=dict)
    sources_seen: set[str] = field(default_factory=set)
    perturbed: int = 0
    not_applicable: list[str] = field(default_factory=list)

    def call_of(self, captured: Captured) -> CapturedCall | str:
        calls = captured.calls if self.model is None else [c for c in captured.calls if c.model == self.model]
        if not calls:
            return "no model call" if self.model is None else f"no call of model {self.model!r}"
        return calls[-1]

    def edits_for(self, signature: ModelSignature) -> list[ColumnEdit] | str:
        assert self.perturbation is not None
        if signature.model not in self.edits:
            if self.registry is None:
                raise ReplayError(f"{self.perturbation} needs the feature registry")
            try:
                self.edits[signature.model] = column_edits(self.perturbation, signature, self.registry)
            except ReplayError as error:  # the name is known (checked first): it does not fit this model
                return str(error)
        return self.edits[signature.model]

    async def one(self, captured: Captured) -> RequestReplay | str:
        """The replay of one request, or why it was skipped."""
        call = self.call_of(captured)
        if isinstance(call, str):
            return call
        signature = self.signatures.get(call.model)
        if signature is None:
            return f"no signature for model {call.model!r}"
        if not captured.utility_weights:
            return "no utility weights (the rank step fell back to first-pass order)"
        unknown = sorted(set(captured.utility_weights) - set(signature.heads))
        if unknown:
            return f"utility weights name heads {unknown} model {call.model!r} lacks"
        weights = weight_vector(captured.utility_weights, signature.heads)
        n = _row_count(call)
        captured_scores = head_matrix(call.outputs, signature, n, who=f"{captured.where}: captured call")
        captured_order = utility_order(captured_scores, weights)

        keep = np.ones(n, np.bool_)
        candidate_call = call
        if self.perturbation is not None:
            changed = self.perturb(captured, call, signature)
            if isinstance(changed, str):
                self.not_applicable.append(changed)
                return changed
            candidate_call, keep = changed

        noise = _identity(signature.heads)
        for _ in range(self.repeats):
            primary = await self._scores(self.baseline, call, signature, n, captured, "baseline")
            secondary = await self._scores(self.baseline, call, signature, n, captured, "baseline")
            measured = compare(
                utility_order(primary, weights),
                utility_order(secondary, weights),
                primary,
                secondary,
                signature.heads,
                top_k=self.top_k,
                p=self.p,
            )
            noise = _worst(noise, measured)

        kept = np.flatnonzero(keep)
        if len(kept):
            candidate = await self._scores(self.scorer, candidate_call, signature, len(kept), captured, "candidate")
        else:
            candidate = np.empty((0, len(signature.heads)), np.float32)
        difference = compare(
            captured_order,
            [int(kept[i]) for i in utility_order(candidate, weights)],
            captured_scores[kept],
            candidate,
            signature.heads,
            top_k=self.top_k,
            p=self.p,
        )
        return RequestReplay(
            request_id=captured.request_id,
            where=captured.where,
            model=call.model,
            target=call.target,
            rows=len(kept),
            rows_removed=n - len(kept),
            difference=difference,
            noise=noise,
        )

    def perturb(
        self, captured: Captured, call: CapturedCall, signature: ModelSignature
    ) -> tuple[CapturedCall, npt.NDArray[np.bool_]] | str:
        perturbation = self.perturbation
        assert perturbation is not None
        n = _row_count(call)
        if perturbation.kind == "drop-source":
            self.sources_seen.update(captured.sources)
            if call.rows is None:
                return "the call has no row ids (drop-source needs them)"
            keep = ~rows_only_from(perturbation.name, call.rows, captured.sources)
            inputs = {
                name: value[keep] if value.ndim >= 1 and value.shape[0] == n else value
                for name, value in call.inputs.items()
            }
            self.perturbed += 1
            return replace(call, inputs=inputs, rows=call.rows[keep]), keep
        edits = self.edits_for(signature)
        if isinstance(edits, str):
            return edits
        self.perturbed += 1
        return replace(call, inputs=apply_column_edits(call.inputs, edits)), np.ones(n, np.bool_)

    async def _scores(
        self, scorer: Scorer, call: CapturedCall, signature: ModelSignature, n: int, captured: Captured, role: str
    ) -> F32:
        outputs = await scorer.score(call)
        return head_matrix(outputs, signature, n, who=f"{captured.where}: {role} {call.model}")


def _row_count(call: CapturedCall) -> int:
    if call.rows is not None:
        return len(call.rows)
    first = next(iter(call.inputs.values()), None)
    return 0 if first is None or first.ndim == 0 else int(first.shape[0])


async def replay(
    captures: Iterable[Captured] | AsyncIterable[Captured],
    scorer: Scorer,
    *,
    signatures: Mapping[str, ModelSignature],
    registry: FeatureRegistry | None = None,
    baseline: Scorer | None = None,
    model: str | None = None,
    top_k: int = 50,
    perturb: Perturbation | None = None,
    repeats: int = 1,
    p: float = 0.9,
    noise_margin: float = 0.2,
) -> ReplayReport:
    """Replay each of `captures` (see the module doc) and report how the ranking moved.

    `scorer` is the candidate; `baseline` (default: `scorer`) scores the unperturbed inputs `repeats`
    times in pairs to measure the noise (0: not measured, taken as none). `model`: which call of each
    request (default: its last). `signatures`: the models' signatures (heads; input columns for
    perturbations, which also need `registry`). `p`: RBO's persistence.

    A metric is above the noise when its mean distance from agreement over the requests (1 - overlap,
    1 - tau, 1 - RBO, or the |Δ| itself) exceeds the noise's mean distance by more than
    `noise_margin` times the noise (any amount, when the noise is zero).

    Requests are skipped (and listed, with why) when they have no such call, no signature, or no utility
    weights. ReplayError when the perturbation names something unknown, or fits none of the requests.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if repeats < 0:
        raise ValueError(f"repeats must be >= 0, got {repeats}")
    if model is not None and model not in signatures:
        raise ReplayError(f"unknown model {model!r}{nearest(model, signatures)}")
    if perturb is not None and perturb.kind != "drop-source":
        if registry is None:
            raise ReplayError(f"{perturb} needs the feature registry")
        _check_known(perturb, registry)
    run = _Run(scorer, baseline or scorer, signatures, registry, model, top_k, perturb, repeats, p)
    replayed: list[RequestReplay] = []
    skipped: list[tuple[str, str]] = []
    async for captured in _iterate(captures):
        outcome = await run.one(captured)
        if isinstance(outcome, str):
            skipped.append((captured.request_id or captured.where, outcome))
        else:
            replayed.append(outcome)
    if perturb is not None:
        if perturb.kind == "drop-source" and run.sources_seen and perturb.name not in run.sources_seen:
            raise ReplayError(f"no capture has source {perturb.name!r}{nearest(perturb.name, run.sources_seen)}")
        if run.perturbed == 0 and run.not_applicable:
            raise ReplayError(run.not_applicable[0])
    return ReplayReport(
        model=model,
        top_k=top_k,
        perturbation=None if perturb is None else str(perturb),
        repeats=repeats,
        requests=tuple(replayed),
        skipped=tuple(skipped),
        metrics=_summaries(replayed, top_k, noise_margin),
    )


def _check_known(perturb: Perturbation, registry: FeatureRegistry) -> None:
    if perturb.kind == "drop-feature":
        try:
            registry.feature(perturb.name)
        except KeyError as error:
            raise ReplayError(str(error.args[0])) from None
    elif perturb.kind == "zero-table":
        tables = {view.table for view in registry.views.values()}
        if perturb.name not in tables:
            raise ReplayError(f"unknown table {perturb.name!r}{nearest(perturb.name, tables)}")


async def _iterate(captures: Iterable[Captured] | AsyncIterable[Captured]) -> AsyncIterable[Captured]:
    if isinstance(captures, AsyncIterable):
        async for captured in captures:
            yield captured
    else:
        for captured in captures:
            yield captured
