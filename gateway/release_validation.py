"""Checks a release must pass before it serves: `quasar deploy validate` runs them offline, and a gateway
runs them again on every worker before `deploy apply` switches (each worker loads its own artifacts).

Each check is one line of the report: its name, whether it passed, and what was found.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import Engine
from engines.errors import EngineError
from engines.types import ModelRef
from features import FeatureRegistry, ModelSignature, check_signature_widths
from features.assembly import InputPlan
from features.errors import DeclarationError
from gateway.release_manifest import Release
from kvstore.base import EmbeddingStore
from kvstore.errors import StoreError

WarmUp = Callable[[Release], Awaitable[list[float]]]
"""Runs the release's warm-up requests; the latency of each in seconds (raises when one fails)."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ValidationReport:
    release: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def failures(self) -> str:
        """The failed checks in one line each (empty when it passed)."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)


async def check_tables(
    release: Release, registry: FeatureRegistry, stores: Mapping[str, EmbeddingStore], signature: ModelSignature
) -> list[Check]:
    """Every pinned table has its version in its store; every table the signature reads is pinned or has
    a current version."""
    checks = []
    table_store = registry.table_stores
    for table, version in sorted(release.decl.tables.items()):
        store_name = table_store.get(table)
        if store_name is None:
            checks.append(Check(f"table {table}", False, "no declared view reads this table"))
            continue
        try:
            info = await stores[store_name].info(table, version)
        except StoreError as error:
            checks.append(Check(f"table {table}", False, f"version {version} is not available: {error.reason}"))
            continue
        checks.append(Check(f"table {table}", True, f"version {version}: {info.count} rows, dim {info.dim}"))
    plan = InputPlan(registry, (f for tensor in signature.inputs for f in tensor.features))
    read = sorted({view.table for view in plan.views})
    unpinned = [t for t in read if t not in release.decl.tables]
    if unpinned:
        current: dict[str, str] = {}
        by_store: dict[str, list[str]] = {}
        for table in unpinned:
            by_store.setdefault(table_store[table], []).append(table)
        for store_name, tables in by_store.items():
            with contextlib.suppress(StoreError):  # a store that cannot answer: its tables are reported missing
                current.update(await stores[store_name].current_versions(tables))
        missing = [t for t in unpinned if t not in current]
        checks.append(
            Check(
                "features online",
                not missing,
                f"tables without a pinned or current version: {missing}"
                if missing
                else f"{len(read)} tables, {len(unpinned)} at their current version (not pinned)",
            )
        )
    else:
        checks.append(Check("features online", True, f"{len(read)} tables, all pinned"))
    return checks


def check_indexes(release: Release, index_root: Path | None) -> list[Check]:
    """A pinned table that ANN indexes are built from needs its index at the pinned version (an `ann`
    source searches the index of the request's version; without it the source fails every request)."""
    if index_root is None or not index_root.is_dir():
        return []
    checks = []
    for table, version in sorted(release.decl.tables.items()):
        built = index_root / table
        if not built.is_dir():
            continue  # no index is built from this table
        ok = (built / version / "meta.json").is_file()
        detail = f"built from {table}@{version}" if ok else f"no index of {table}@{version}: `quasar index build` it"
        checks.append(Check(f"index {table}", ok, detail))
    return checks


def check_signature(release: Release, signature: ModelSignature, load: Callable[[Path], ModelSignature]) -> Check:
    """The release's signature file declares what the gateway's declarations do for its model."""
    try:
        declared = load(release.signature_path)
    except (OSError, DeclarationError, ValueError) as error:
        return Check("signature", False, f"cannot read {release.signature_path.name}: {error}")
    if declared.model != release.model:
        return Check("signature", False, f"it declares model {declared.model!r}, the release serves {release.model!r}")
    same = declared.inputs == signature.inputs and dict(declared.outputs) == dict(signature.outputs)
    if not same:
        return Check(
            "signature",
            False,
            f"it differs from the serving declaration of {release.model!r} ({signature.source}): "
            "ship the signature with the deployment first",
        )
    return Check("signature", True, f"{len(signature.inputs)} inputs, heads {list(signature.heads)}")


async def check_engines(release: Release, engines: Mapping[str, Engine], signature: ModelSignature) -> list[Check]:
    """Each artifact's metadata on its engine: every declared input at its width, every output present."""
    checks = []
    for engine_name in sorted(release.decl.artifacts):
        name = f"engine {engine_name}"
        engine = engines.get(engine_name)
        if engine is None:
            checks.append(Check(name, False, f"no such engine (engines: {sorted(engines)})"))
            continue
        artifact = release.decl.artifacts[engine_name]
        ref = ModelRef(release.served_name(engine_name), artifact.version)
        try:
            metadata = await engine.metadata(ref)
        except EngineError as error:
            checks.append(Check(name, False, f"cannot read the model's metadata: {error}"))
            continue
        problems = []
        try:  # the same check the gateway runs on its routes at startup
            check_signature_widths(signature, {str(ref): {spec.name: spec.shape for spec in metadata.inputs}})
        except DeclarationError as error:
            problems += [message for _, message in error.issues]
        outputs = {spec.name for spec in metadata.outputs}
        problems += [f"no output {o!r} (outputs: {sorted(outputs)})" for o in signature.outputs if o not in outputs]
        detail = "; ".join(problems) if problems else f"{ref} version {metadata.version} matches the signature"
        checks.append(Check(name, not problems, detail))
    return checks


async def check_sample(release: Release, engines: Mapping[str, Engine], signature: ModelSignature) -> list[Check]:
    """Each artifact scores the stored validation sample as the trainer did (max abs diff <= tolerance)."""
    path = release.sample_path
    if path is None:
        return [Check("validation sample", False, "the manifest names no validation.sample")]
    try:
        with np.load(path) as sample:
            inputs = {k.removeprefix("in."): sample[k] for k in sample.files if k.startswith("in.")}
            expected = {k.removeprefix("out."): sample[k] for k in sample.files if k.startswith("out.")}
    except (OSError, ValueError) as error:
        return [Check("validation sample", False, f"cannot read {path.name}: {error}")]
    tolerance = release.decl.validation.tolerance
    checks = []
    for engine_name in sorted(release.decl.artifacts):
        name = f"scores on {engine_name}"
        engine = engines.get(engine_name)
        if engine is None:
            continue  # reported by check_engines
        artifact = release.decl.artifacts[engine_name]
        try:
            outputs = await engine.infer(ModelRef(release.served_name(engine_name), artifact.version), inputs)
        except EngineError as error:
            checks.append(Check(name, False, f"the sample failed: {error}"))
            continue
        worst = 0.0
        problems = []
        for output, want in expected.items():
            got = outputs.get(output)
            if got is None or np.asarray(got).size != want.size:
                problems.append(f"output {output!r} missing or of another size")
                continue
            worst = max(worst, float(np.max(np.abs(np.asarray(got, np.float64).reshape(want.shape) - want))))
        if worst > tolerance:
            problems.append(f"max abs diff {worst:.3g} > tolerance {tolerance:g}")
        rows = len(next(iter(inputs.values()))) if inputs else 0
        detail = "; ".join(problems) if problems else f"{rows} rows, max abs diff {worst:.3g} <= {tolerance:g}"
        checks.append(Check(name, not problems, detail))
    return checks


async def check_warmup(release: Release, warm_up: WarmUp | None) -> Check:
    validation = release.decl.validation
    if warm_up is None or validation.warmup_requests == 0:
        return Check("warm-up", True, "not run")
    try:
        latencies = await warm_up(release)
    except Exception as error:  # any failure of a warm-up request fails the check, with its message
        return Check("warm-up", False, f"a warm-up request failed: {error}")
    worst = max(latencies, default=0.0)
    ok = worst <= validation.warmup_budget_s
    return Check(
        "warm-up",
        ok,
        f"{len(latencies)} requests, slowest {worst * 1e3:.1f} ms (budget {validation.warmup_budget_s * 1e3:.0f} ms)",
    )
