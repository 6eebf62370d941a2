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
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, cast, get_args

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from features.errors import nearest
from features.registry import DerivedFeature, Feature, FeatureRegistry, ViewFeature
from features.signature import ModelSignature
from gateway.capture_record import Captured, CapturedCall
from health.ranking import kendall_tau, rbo, topk_overlap
from remix.steps.rank import weight_vector

F32 = npt.NDArray[np.float32]
PerturbKind = Literal["drop-feature", "drop-source", "zero-table"]
PERTURB_KINDS: tuple[str, ...] = get_args(PerturbKind)


class ReplayError(ValueError):
    """A replay that cannot run as asked: an unknown model, feature, source or table (with the nearest
    names), or a scorer answer that does not fit the model's signature."""


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


# -- perturbations ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Perturbation:
    """What to change in the captured inputs before scoring them; see the module doc."""

    kind: PerturbKind
    name: str

    @classmethod
    def parse(cls, spec: str) -> Perturbation:
        """'KIND:NAME' (drop-feature:NAME, drop-source:NAME, zero-table:TABLE); ValueError otherwise."""
        kind, _, name = spec.partition(":")
        if kind not in PERTURB_KINDS or not name:
            raise ValueError(
                f"bad perturbation {spec!r}: expected drop-feature:NAME, drop-source:NAME or zero-table:TABLE"
                f"{nearest(kind, PERTURB_KINDS)}"
            )
        return cls(cast(PerturbKind, kind), name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class ColumnEdit:
    """Columns [start, stop) of input tensor `tensor` set to `values` (one per column)."""

    tensor: str
    start: int
    stop: int
    values: np.ndarray


@dataclass(frozen=True)
class _Span:
    tensor: str
    start: int
    stop: int
    feature: Feature


def _spans(signature: ModelSignature) -> list[_Span]:
    return [
        _Span(tensor.name, start, stop, feature)
        for tensor in signature.inputs
        for feature, start, stop in tensor.columns()
    ]


def _tables(feature: Feature) -> frozenset[str]:
    """The store tables a feature's values are read from (through every input of a derived feature)."""
    if isinstance(feature, ViewFeature):
        return frozenset({feature.view.table})
    if isinstance(feature, DerivedFeature):
        return frozenset().union(*(_tables(f) for f in feature.inputs))
    return frozenset()


def column_edits(perturbation: Perturbation, signature: ModelSignature, registry: FeatureRegistry) -> list[ColumnEdit]:
    """The input columns a drop-feature or zero-table perturbation changes in calls of `signature`'s model.

    ReplayError for a name the registry does not know (with the nearest names), a feature the model does
    not take as an input, a feature with no declared default (derived and built-in ones), or a table the
    model reads nothing from.
    """
    spans = _spans(signature)
    if perturbation.kind == "drop-feature":
        name = perturbation.name
        try:
            registry.feature(name)
        except KeyError as error:
            raise ReplayError(str(error.args[0])) from None
        matches = [span for span in spans if span.feature.name == name]
        if not matches:
            names = [span.feature.name for span in spans]
            raise ReplayError(
                f"model {signature.model!r} does not take feature {name!r} as an input{nearest(name, names)}"
            )
        edits = []
        for span in matches:
            feature = span.feature
            if not isinstance(feature, ViewFeature):
                kind = "derived" if isinstance(feature, DerivedFeature) else "built in"
                raise ReplayError(
                    f"feature {name!r} is {kind}: only stored features have a declared default "
                    f"(zero-table:TABLE zeroes what is read from a table: {sorted(_tables(feature)) or 'none'})"
                )
            default = np.broadcast_to(np.asarray(feature.decl.default, dtype=np.float64), (feature.width,))
            edits.append(ColumnEdit(span.tensor, span.start, span.stop, default))
        return edits
    if perturbation.kind == "zero-table":
        table = perturbation.name
        tables = {view.table for view in registry.views.values()}
        if table not in tables:
            raise ReplayError(f"unknown table {table!r}{nearest(table, tables)}")
        edits = [
            ColumnEdit(span.tensor, span.start, span.stop, np.zeros(span.stop - span.start))
            for span in spans
            if table in _tables(span.feature)
        ]
        if not edits:
            read = sorted(set().union(*(_tables(span.feature) for span in spans)))
            raise ReplayError(f"model {signature.model!r} reads nothing from table {table!r} (it reads {read})")
        return edits
    raise ValueError(f"{perturbation} changes rows, not columns")


def apply_column_edits(inputs: Mapping[str, np.ndarray], edits: Sequence[ColumnEdit]) -> dict[str, np.ndarray]:
    """`inputs` with the edited tensors copied and changed (the others shared, unchanged). A vector input
    (n,) is one column."""
    out = dict(inputs)
    for edit in edits:
        if edit.tensor not in out:
            raise ReplayError(f"the call has no input tensor {edit.tensor!r} (inputs: {sorted(inputs)})")
        tensor = out[edit.tensor]
        if tensor is inputs[edit.tensor]:
            tensor = out[edit.tensor] = np.array(tensor, copy=True)
        values = edit.values.astype(tensor.dtype)
        if tensor.ndim == 1:
            tensor[:] = values[0]
        else:
            tensor[:, edit.start : edit.stop] = values
    return out


def rows_only_from(source: str, rows: np.ndarray, sources: Mapping[str, np.ndarray]) -> npt.NDArray[np.bool_]:
    """Which `rows` (candidate ids) came from `source` and no other source."""
    produced = np.isin(rows, sources[source]) if source in sources else np.zeros(len(rows), np.bool_)
    elsewhere = np.zeros(len(rows), np.bool_)
    for name, ids in sources.items():
        if name != source:
            elsewhere |= np.isin(rows, ids)
    return np.asarray(produced & ~elsewhere)


# -- comparisons --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One ranking of a request's rows against another. `head_mean_abs`/`head_max_abs`: |score difference|
    per head over the rows both scored (NaN when there are none)."""

    topk_overlap: float
    kendall_tau: float
    rbo: float
    head_mean_abs: Mapping[str, float]
    head_max_abs: Mapping[str, float]

    def metrics(self, top_k: int) -> dict[str, float]:
        """Metric name -> value, in report order."""
        values = {f"top-{top_k} overlap": self.topk_overlap, "kendall tau": self.kendall_tau, "rbo": self.rbo}
        for head in self.head_mean_abs:
            values[f"{head} mean |Δ|"] = self.head_mean_abs[head]
            values[f"{head} max |Δ|"] = self.head_max_abs[head]
        return values


def _is_similarity(metric: str) -> bool:
    return not metric.endswith("|Δ|")


def _distance(metric: str, value: float) -> float:
    """How far from agreement a metric value is: 1 - similarity, or the delta itself."""
    return 1.0 - value if _is_similarity(metric) else value


def compare(
    reference: Sequence[int],
    other: Sequence[int],
    reference_scores: F32,
    other_scores: F32,
    heads: Sequence[str],
    *,
    top_k: int,
    p: float,
) -> Comparison:
    """`other` against `reference` (orders of row indices, best first) and their scores of the same rows
    (row for row: (n, len(heads)) each)."""
    delta = np.abs(other_scores.astype(np.float64) - reference_scores.astype(np.float64))
    empty = delta.shape[0] == 0
    return Comparison(
        topk_overlap=topk_overlap(reference, other, top_k),
        kendall_tau=kendall_tau(reference, other),
        rbo=rbo(reference, other, p),
        head_mean_abs={h: math.nan if empty else float(delta[:, i].mean()) for i, h in enumerate(heads)},
        head_max_abs={h: math.nan if empty else float(delta[:, i].max()) for i, h in enumerate(heads)},
    )


def head_matrix(outputs: Mapping[str, np.ndarray], signature: ModelSignature, n: int, *, who: str) -> F32:
    """float32 (n, len(heads)) of the outputs' columns in the signature's head order (as `rank` reads them).
    ReplayError naming `who` when an output is missing or mis-shaped."""
    columns = []
    for name, heads in signature.outputs.items():
        if name not in outputs:
            raise ReplayError(f"{who}: no output {name!r} (got {sorted(outputs)})")
        value = np.asarray(outputs[name])
        if value.size != n * len(heads) or value.shape[0] != n:
            raise ReplayError(f"{who}: output {name!r} has shape {value.shape}, expected ({n}, {len(heads)})")
        columns.append(value.reshape(n, len(heads)).astype(np.float32, copy=False))
    return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)


def utility_order(scores: F32, weights: F32) -> list[int]:
    """Row indices by utility = scores @ weights descending, ties in row order: `rank.by_utility`'s order."""
    utility = scores @ weights
    return [int(i) for i in np.argsort(-utility, kind="stable")]


# -- the report ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Aggregate of one metric over the replayed requests (NaN values, e.g. an undefined tau, left out)."""

    mean: float
    p50: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
        if finite.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        return cls(
            float(finite.mean()), float(np.median(finite)), float(finite.min()), float(finite.max()), finite.size
        )


@dataclass(frozen=True)
class MetricSummary:
    """One metric: its `difference` (candidate against capture) and `noise` (primary against secondary)
    over the requests. `above_noise`: the mean distance from agreement of the difference exceeds the noise's
    by more than the noise margin (see `replay`)."""

    metric: str
    difference: Summary
    noise: Summary
    above_noise: bool


@dataclass(frozen=True)
class RequestReplay:
    """One replayed request: where it was read, the call replayed, how many rows were scored (and removed
    by a drop-source), the candidate's `difference` from the capture and the worst `noise` measured."""

    request_id: str
    where: str
    model: str
    target: str
    rows: int
    rows_removed: int
    difference: Comparison
    noise: Comparison


@dataclass(frozen=True)
class ReplayReport:
    """Per-request figures and their aggregates (`metrics`), the requests skipped (with why), and what
    was replayed. `differences` are the metrics above the noise: the only ones a reader should act on."""

    model: str | None
    top_k: int
    perturbation: str | None
    repeats: int
    requests: tuple[RequestReplay, ...]
    skipped: tuple[tuple[str, str], ...]  # (request id or file:line, reason)
    metrics: tuple[MetricSummary, ...]

    @property
    def differences(self) -> tuple[MetricSummary, ...]:
        return tuple(m for m in self.metrics if m.above_noise)

    @property
    def zero_difference(self) -> bool:
        """Every request ranked exactly as captured with exactly the captured scores."""
        for request in self.requests:
            for metric, value in request.difference.metrics(self.top_k).items():
                if not math.isnan(value) and _distance(metric, value) != 0.0:
                    return False
        return True

    def to_json(self) -> dict[str, Any]:
        """Plain values (NaN stays a float: serialise with orjson, which writes it as null)."""
        return {
            "model": self.model,
            "top_k": self.top_k,
            "perturbation": self.perturbation,
            "repeats": self.repeats,
            "replayed": len(self.requests),
            "zero_difference": self.zero_difference,
            "metrics": [
                {
                    "metric": m.metric,
                    "difference": vars(m.difference),
                    "noise": vars(m.noise),
                    "above_noise": m.above_noise,
                }
                for m in self.metrics
            ],
            "requests": [
                {
                    "request_id": r.request_id,
                    "where": r.where,
                    "model": r.model,
                    "target": r.target,
                    "rows": r.rows,
                    "rows_removed": r.rows_removed,
                    "difference": r.difference.metrics(self.top_k),
                    "noise": r.noise.metrics(self.top_k),
                }
                for r in self.requests
            ],
            "skipped": [{"request": who, "reason": why} for who, why in self.skipped],
        }

    def table(self) -> Table:
        """The aggregate metrics as a rich table: the difference (mean, p50, min, max), the noise (its
        mean) and whether the difference is beyond it."""
        what = f"replay of {len(self.requests)} request(s)"
        if self.perturbation:
            what += f", perturbed by {self.perturbation}"
        table = Table(
            title=what,
            title_justify="left",
            caption="noise: the baseline against itself (mean); differs: beyond the noise",
            caption_justify="left",
        )
        for column in ("metric", "mean", "p50", "min", "max", "noise", ""):
            table.add_column(column, justify="left" if column == "metric" else "right", no_wrap=True)
        for m in self.metrics:
            d = m.difference
            verdict = "[bold red]differs[/]" if m.above_noise else ""
            table.add_row(m.metric, *(_fmt(v) for v in (d.mean, d.p50, d.min, d.max, m.noise.mean)), verdict)
        return table

    def render(self, console: Console) -> None:
        console.print(self.table())
        if not self.requests:
            console.print("no request was replayed")
        elif self.zero_difference:
            console.print("zero difference: every request ranked and scored exactly as captured")
        else:
            console.print(f"{len(self.differences)} of {len(self.metrics)} metrics differ beyond the noise")
        reasons: dict[str, int] = {}
        for _, why in self.skipped:
            reasons[why] = reasons.get(why, 0) + 1
        for why, count in sorted(reasons.items()):
            console.print(f"skipped {count} request(s): {why}")


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


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


def _identity(heads: Sequence[str]) -> Comparison:
    return Comparison(1.0, 1.0, 1.0, dict.fromkeys(heads, 0.0), dict.fromkeys(heads, 0.0))


def _worst(a: Comparison, b: Comparison) -> Comparison:
    """Per metric, the one of `a` and `b` farther from agreement."""

    def far(x: float, y: float, similarity: bool) -> float:
        if math.isnan(x):
            return y
        if math.isnan(y):
            return x
        return min(x, y) if similarity else max(x, y)

    return Comparison(
        topk_overlap=far(a.topk_overlap, b.topk_overlap, True),
        kendall_tau=far(a.kendall_tau, b.kendall_tau, True),
        rbo=far(a.rbo, b.rbo, True),
        head_mean_abs={h: far(v, b.head_mean_abs[h], False) for h, v in a.head_mean_abs.items()},
        head_max_abs={h: far(v, b.head_max_abs[h], False) for h, v in a.head_max_abs.items()},
    )


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


def _summaries(replayed: Sequence[RequestReplay], top_k: int, noise_margin: float) -> tuple[MetricSummary, ...]:
    if not replayed:
        return ()
    names = list(replayed[0].difference.metrics(top_k))
    differences = [r.difference.metrics(top_k) for r in replayed]
    noises = [r.noise.metrics(top_k) for r in replayed]
    summaries = []
    for name in names:
        diff_values = [d.get(name, math.nan) for d in differences]
        noise_values = [n.get(name, math.nan) for n in noises]
        diff_distance = Summary.of(_distance(name, v) for v in diff_values).mean
        noise_distance = Summary.of(_distance(name, v) for v in noise_values).mean
        noise_distance = 0.0 if math.isnan(noise_distance) else noise_distance
        above = not math.isnan(diff_distance) and diff_distance > noise_distance * (1.0 + noise_margin)
        summaries.append(MetricSummary(name, Summary.of(diff_values), Summary.of(noise_values), above))
    return tuple(summaries)
