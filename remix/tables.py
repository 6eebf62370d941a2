"""Which store tables a workflow reads at the request's resolved versions, bound at build time.

A step that resolves the request's table versions (`features`) is a `TableResolver`: it writes
`versions_key`, and once the workflow is built it is told the tables that the steps reading that key
declare in their `tables`, and resolves those only. Why: it resolved every table of the deployment's
registry, every product's, on every request: a stat per table (a third of them another product's), and
a table of another product without a current version failed this workflow's requests. A reader that
does not declare `tables` (a step type from a plugin, say) keeps the old behaviour: every table is
resolved, which is correct, only slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from remix.keys import Key
from remix.step import Composite, Step
from remix.wrappers import Guarded


@runtime_checkable
class TableResolver(Protocol):
    versions_key: Key[Any]

    def resolve_only(self, tables: frozenset[str]) -> None:
        """Resolve `tables` (and what the resolver reads itself) instead of every declared table."""
        ...


def leaves(step: Step) -> Iterator[Step]:
    """The steps under `step` that are neither wrappers nor composites: fallbacks and every arm included."""
    if isinstance(step, Guarded):
        yield from leaves(step.inner)
        if step.fallback is not None:
            yield from leaves(step.fallback)
    elif isinstance(step, Composite):
        for child in step.children():
            yield from leaves(child)
    else:
        yield step


def bind_tables(root: Step) -> None:
    """Tell each `TableResolver` under `root` the tables its readers declare (see the module doc)."""
    steps = list(leaves(root))
    for resolver in steps:
        if not isinstance(resolver, TableResolver):
            continue
        key = resolver.versions_key.name
        readers = [s for s in steps if s is not resolver and key in {k.name for k in (*s.reads, *s.optional_reads)}]
        declared: list[frozenset[str]] = []
        for reader in readers:
            tables = getattr(reader, "tables", None)
            if not isinstance(tables, frozenset):
                break  # this reader does not say: every table stays resolved
            declared.append(tables)
        else:
            resolver.resolve_only(frozenset[str]().union(*declared))
