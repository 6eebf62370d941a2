"""Build-time validation of a workflow's data flow and names, so nothing is discovered per request.

Rules (each violation is a `WorkflowBuildError` naming the step and the key):
- every `reads` and `optional_reads` key has a producer that runs earlier: earlier in a sequence, or before the parallel
  that holds the reader; parallel branches run concurrently, so a branch cannot read (not even
  optionally) what a sibling writes;
- a required read must be certain: if its producer may leave it unwritten (a fail-open step, or a switch
  or fallback whose alternatives do not all write it), the reader must list it in `optional_reads`;
- one producer per key, except alternatives (switch arms, a step and its fallback), which may write the
  same keys; a key's type is the same for its producer and its readers;
- step names are unique (they name trace entries and metrics), except that switch arms, of which only
  one runs per request, may share names;
- a switch whose selector knows its domain has a case for every value (or a default) and no case for a
  value it cannot return.
Workflows are sequences, parallels and switches, so data flows forward only: a cycle would need a
read of a later write, which the first rule already rejects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from remix.compose import Parallel, Sequence, Switch
from remix.keys import Key
from remix.step import Composite, Step
from remix.wrappers import Guarded


class WorkflowBuildError(ValueError):
    """A workflow that cannot be built; `step` and `key` name what is wrong where known."""

    def __init__(self, message: str, *, step: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.key = key


def validate(root: Step) -> None:
    """Raise `WorkflowBuildError` for the first violation of the module's rules; return when none."""
    _names(root)
    _flow(root, {}, {})


@dataclass(frozen=True)
class _Slot:
    key: Key[Any]
    certain: bool  # written whenever the producing step completed (not failed open)
    producers: tuple[str, ...]


# Keyed by key name: a Context stores slots by name.
_Slots = dict[str, _Slot]


def _flow(step: Step, available: Mapping[str, _Slot], concurrent: Mapping[str, str]) -> _Slots:
    """Check `step` against the slots written before it; return the slots it writes.

    `concurrent` maps keys written by parallel siblings of an enclosing branch to the sibling's name.
    """
    if isinstance(step, Guarded):
        out = _flow(step.inner, available, concurrent)
        if step.fallback is not None:
            out = _alternatives([out, _flow(step.fallback, available, concurrent)])
        if step.policy.fail_open:
            out = {name: _Slot(slot.key, False, slot.producers) for name, slot in out.items()}
        return out
    if isinstance(step, Sequence):
        seen = dict(available)
        produced: _Slots = {}
        for child in step.steps:
            out = _flow(child, seen, concurrent)
            _add(produced, out, seen)
            seen.update(out)
        return produced
    if isinstance(step, Parallel):
        produced = {}
        for branch in step.branches:
            siblings = {key.name: other.name for other in step.branches if other is not branch for key in other.writes}
            out = _flow(branch, available, {**concurrent, **siblings})
            _add(produced, out, available)
        return produced
    if isinstance(step, Switch):
        _check_reads(step.name, step.selector.reads, frozenset(), available, concurrent)
        _check_domain(step)
        return _alternatives([_flow(arm, available, concurrent) for arm in step.children()])
    # A leaf, or a composite of another kind: trusted to do what it declares.
    _check_reads(step.name, step.reads, step.optional_reads, available, concurrent)
    return {key.name: _Slot(key, True, (step.name,)) for key in step.writes}


def _add(produced: _Slots, out: Mapping[str, _Slot], before: Mapping[str, _Slot]) -> None:
    """Merge `out` into `produced`, rejecting a key that already has a producer."""
    for name, slot in out.items():
        earlier = produced.get(name) or before.get(name)
        if earlier is not None:
            raise WorkflowBuildError(
                f"key {name!r} is written by both {_names_of(earlier.producers)} and "
                f"{_names_of(slot.producers)}; a key has one producer (only alternatives of a switch or a "
                "fallback may write the same key)",
                step=slot.producers[0],
                key=name,
            )
        produced[name] = slot


def _alternatives(outs: Iterable[_Slots]) -> _Slots:
    """Slots written by one of several alternatives: certain only when every alternative writes them."""
    outs = list(outs)
    merged: _Slots = {}
    for out in outs:
        for name, slot in out.items():
            previous = merged.get(name)
            if previous is None:
                merged[name] = slot
                continue
            _check_type(previous.key, slot.key, slot.producers[0])
            producers = previous.producers + tuple(p for p in slot.producers if p not in previous.producers)
            merged[name] = _Slot(previous.key, previous.certain and slot.certain, producers)
    for name, slot in merged.items():
        if slot.certain and not all(name in out and out[name].certain for out in outs):
            merged[name] = _Slot(slot.key, False, slot.producers)
    return merged


def _check_reads(
    step: str,
    reads: frozenset[Key[Any]],
    optional_reads: frozenset[Key[Any]],
    available: Mapping[str, _Slot],
    concurrent: Mapping[str, str],
) -> None:
    for key in sorted(reads | optional_reads, key=lambda k: k.name):
        required = key in reads
        if key.name in concurrent and key.name not in available:
            raise WorkflowBuildError(
                f"step {step!r} reads {key.name!r}, which {concurrent[key.name]!r} writes in a parallel branch "
                "running at the same time; read it after the parallel",
                step=step,
                key=key.name,
            )
        slot = available.get(key.name)
        if slot is None:
            # Optional reads too: optional means "its producer may fail open", not "may not exist" — a
            # merge of a source no step writes is a typo that would otherwise fail every request.
            kind = "reads" if required else "optionally reads"
            raise WorkflowBuildError(
                f"step {step!r} {kind} {key.name!r}, but no earlier step writes it", step=step, key=key.name
            )
        _check_type(slot.key, key, step)
        if required and not slot.certain:
            raise WorkflowBuildError(
                f"step {step!r} requires {key.name!r}, but {_names_of(slot.producers)} may leave it unwritten "
                "(fail-open, or not written by every alternative); list it in the reader's optional_reads or "
                "make its producer fail closed",
                step=step,
                key=key.name,
            )


def _check_type(produced: Key[Any], wanted: Key[Any], step: str) -> None:
    if produced.type_ is not wanted.type_:
        raise WorkflowBuildError(
            f"step {step!r} uses key {wanted.name!r} as {_type_name(wanted.type_)}, "
            f"but it is written as {_type_name(produced.type_)}",
            step=step,
            key=wanted.name,
        )


def _check_domain(switch: Switch) -> None:
    domain = switch.selector.domain
    if domain is None:
        return
    described = switch.selector.describe()
    impossible = sorted(set(switch.cases) - domain)
    if impossible:
        raise WorkflowBuildError(
            f"switch {switch.name!r}: case {impossible[0]!r} can never match; {described} takes the values "
            f"{', '.join(sorted(domain))}",
            step=switch.name,
        )
    missing = sorted(domain - set(switch.cases))
    if missing and switch.default is None:
        raise WorkflowBuildError(
            f"switch {switch.name!r} has no case for {described} = {', '.join(map(repr, missing))} and no default",
            step=switch.name,
        )


def _names(step: Step) -> frozenset[str]:
    """Every step name under `step` (wrappers share their inner step's name); raises on a duplicate."""
    if isinstance(step, Guarded):
        parts = [_names(step.inner)]
        if step.fallback is not None:
            parts.append(_names(step.fallback))
        return _disjoint(parts)
    if isinstance(step, Switch):
        arms = frozenset().union(*(_names(arm) for arm in step.children()))
        return _disjoint([frozenset({step.name}), arms])
    if isinstance(step, Composite):
        return _disjoint([frozenset({step.name}), *(_names(child) for child in step.children())])
    return frozenset({step.name})


def _disjoint(parts: Iterable[frozenset[str]]) -> frozenset[str]:
    seen: set[str] = set()
    for part in parts:
        duplicate = seen & part
        if duplicate:
            name = min(duplicate)
            raise WorkflowBuildError(
                f"two steps are named {name!r}; step names are unique in a workflow (they name trace entries "
                "and metrics; only switch arms may share one)",
                step=name,
            )
        seen |= part
    return frozenset(seen)


def _names_of(producers: tuple[str, ...]) -> str:
    return " / ".join(repr(p) for p in producers)


def _type_name(type_: object) -> str:
    return getattr(type_, "__qualname__", repr(type_))
