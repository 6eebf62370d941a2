"""Whether the targets of one route can stand in for each other: a caller sends one set of tensors
to whichever target the route picks (A/B arm, fallback, shadow) and reads the same outputs back."""

from __future__ import annotations

from collections.abc import Sequence

from engines.types import ModelMetadata, TensorSpec


def signature_conflicts(
    reference: tuple[str, ModelMetadata], others: Sequence[tuple[str, ModelMetadata, bool]]
) -> list[str]:
    """Why each of `others` (label, signature, whether its outputs are read) cannot take the
    reference's place; empty when all can.

    Inputs must match by name and dtype, with compatible shapes (-1 matches any size). Outputs the
    reference declares must be declared alike by every target whose answer is read (shadow answers
    are discarded, so only their inputs matter). An empty signature (an engine that does not describe
    its models) is not compared.
    """
    label, meta = reference
    problems: list[str] = []
    for other_label, other, outputs_read in others:
        if not other.inputs and not other.outputs:
            continue
        problems += _differences("input", label, meta.inputs, other_label, other.inputs, exact_names=True)
        if outputs_read:
            problems += _differences("output", label, meta.outputs, other_label, other.outputs, exact_names=False)
    return problems


def _differences(
    kind: str,
    label: str,
    specs: tuple[TensorSpec, ...],
    other_label: str,
    other_specs: tuple[TensorSpec, ...],
    *,
    exact_names: bool,
) -> list[str]:
    theirs = {spec.name: spec for spec in other_specs}
    problems = []
    for spec in specs:
        other = theirs.pop(spec.name, None)
        if other is None:
            problems.append(f"{other_label} has no {kind} {spec.name!r} (which {label} has)")
        elif other.dtype != spec.dtype:
            problems.append(f"{kind} {spec.name!r} is {other.dtype} on {other_label}, {spec.dtype} on {label}")
        elif not _compatible(spec.shape, other.shape):
            problems.append(
                f"{kind} {spec.name!r} has shape {list(other.shape)} on {other_label}, {list(spec.shape)} on {label}"
            )
    if exact_names and theirs:
        problems.append(f"{other_label} takes {kind}s {sorted(theirs)} that {label} does not")
    return problems


def _compatible(shape: tuple[int, ...], other: tuple[int, ...]) -> bool:
    return len(shape) == len(other) and all(a == b or a < 0 or b < 0 for a, b in zip(shape, other, strict=True))
