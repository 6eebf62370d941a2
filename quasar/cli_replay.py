"""`quasar replay`: replay captured requests through a world's engines and report how the ranking moved.

Scorers call engines directly, not through routes: each call goes to the target a `TargetResolver` names
for it. `captured_target` (the default) sends a call back to the target that served it; `fixed_target`
sends every call to one `--route`. A resolver for a release (logical model -> the target its manifest
routes the model to) is one more function of the same shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import orjson
from rich.console import Console

from engines import Engine, EnginesConfig, ModelRef, Offloader, build_engines
from engines.base import LoadsModels
from engines.errors import EngineError
from features import DeclarationError, load_registry, load_signatures
from features.errors import nearest
from gateway.capture_record import CapturedCall, CaptureFormatError, read_captures
from gateway.deployment import Deployment
from gateway.release_manifest import Release, ReleaseError, load_release
from health.replay import Perturbation, ReplayError, ReplayReport, Scorer
from health.replay import replay as run_replay

DEFAULT_WORLD = Path("var/world")


@dataclass(frozen=True)
class Target:
    """A concrete model on one engine: 'engine/model[/version]', as `ModelUse.target` and `--route` write it."""

    engine: str
    ref: ModelRef

    @classmethod
    def parse(cls, label: str) -> Target:
        parts = label.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"target {label!r} is not ENGINE/MODEL[/VERSION]")
        return cls(parts[0], ModelRef(parts[1], parts[2] if len(parts) == 3 else None))

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.ref}"


TargetResolver = Callable[[CapturedCall], Target]
"""Which target scores a captured call."""


def captured_target(call: CapturedCall) -> Target:
    """The target that served the call when it was captured."""
    try:
        return Target.parse(call.target)
    except ValueError as error:
        raise ReplayError(f"captured call of {call.model!r}: {error}") from None


def fixed_target(target: Target) -> TargetResolver:
    """Every call to `target`."""
    return lambda call: target


def release_target(release: Release, fallback: TargetResolver) -> TargetResolver:
    """Calls of the release's model to the first target of its route (its artifact there); others to
    `fallback`."""
    engine = release.decl.route.targets[0].engine
    target = Target(engine, ModelRef(release.served_name(engine), release.decl.artifacts[engine].version))
    return lambda call: target if call.model == release.model else fallback(call)


def _releases_in(directory: Path) -> list[Release]:
    """Every readable release manifest in `directory` (captured calls may name any of them)."""
    found = []
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        try:
            found.append(load_release(path))
        except ReleaseError:
            continue
    return found


def known_models(config: EnginesConfig, engine: str) -> list[str] | None:
    """The model names an engine's config lists (None when its config names no list, e.g. a TF Serving
    endpoint whose one model is the server's)."""
    models = getattr(config.engines[engine], "models", None)
    if isinstance(models, Mapping | list) and models:
        return sorted(models)
    return None


class EnginePool:
    """The world's engines, built without I/O; each is started the first time a target names it and
    closed by `close()`. A target naming an unknown engine or a model its engine does not list is a
    ReplayError with the nearest names."""

    def __init__(self, config: EnginesConfig, offloader: Offloader, releases: Sequence[Release] = ()) -> None:
        """`releases`: their model files are loaded into their engines when a target names them (a call a
        release served names `<model>@<release>`)."""
        self._config = config
        self._engines = build_engines(config, offloader)
        self._started: dict[str, Engine] = {}
        self._lock = asyncio.Lock()
        self._release_files: dict[tuple[str, str], Path] = {}
        for release in releases:
            for engine in release.decl.artifacts:
                path = release.file(engine)
                if path is not None:
                    self._release_files[(engine, release.served_name(engine))] = path
        self._loaded: set[tuple[str, str]] = set()

    def check(self, target: Target) -> None:
        if target.engine not in self._engines:
            raise ReplayError(f"unknown engine {target.engine!r}{nearest(target.engine, self._engines)}")
        models = known_models(self._config, target.engine)
        if (target.engine, target.ref.name) in self._release_files:
            return
        if models is not None and target.ref.name not in models:
            raise ReplayError(
                f"engine {target.engine!r} has no model {target.ref.name!r}{nearest(target.ref.name, models)}"
            )

    async def engine(self, target: Target) -> Engine:
        self.check(target)
        async with self._lock:
            if target.engine not in self._started:
                engine = self._engines[target.engine]
                await engine.start()
                self._started[target.engine] = engine
            key = (target.engine, target.ref.name)
            path = self._release_files.get(key)
            if path is not None and key not in self._loaded:
                engine = self._started[target.engine]
                if not isinstance(engine, LoadsModels):
                    raise ReplayError(f"engine {target.engine!r} cannot load the release file {path.name}")
                await engine.load_model(target.ref.name, path)
                self._loaded.add(key)
        return self._started[target.engine]

    async def close(self) -> None:
        for engine in self._started.values():
            await engine.close()
        self._started.clear()


class EngineScorer:
    """A `Scorer` calling, for each captured call, the target `resolve` names, with the call's inputs."""

    def __init__(self, pool: EnginePool, resolve: TargetResolver, *, timeout_s: float | None = None) -> None:
        self._pool = pool
        self._resolve = resolve
        self._timeout_s = timeout_s

    async def score(self, call: CapturedCall) -> dict[str, np.ndarray]:
        target = self._resolve(call)
        engine = await self._pool.engine(target)
        return await engine.infer(target.ref, call.inputs, timeout_s=self._timeout_s)


def _target_option(value: str | None, option: str, pool: EnginePool) -> Target | None:
    if value is None:
        return None
    try:
        target = Target.parse(value)
        pool.check(target)
    except ValueError as error:  # ReplayError included
        raise click.BadParameter(str(error), param_hint=option) from None
    return target


async def _replay(
    captures: tuple[Path, ...],
    world: Path,
    route: str | None,
    baseline_route: str | None,
    perturbation: Perturbation | None,
    top_k: int,
    model: str | None,
    repeats: int,
    release: Release | None = None,
) -> ReplayReport:
    deployment = Deployment(world)
    registry = load_registry(deployment.features_dir)
    signatures = load_signatures(deployment.models_dir, registry)
    offloader = Offloader(max_workers=1, max_pending=16)
    releases = _releases_in(world / "releases") + ([release] if release is not None else [])
    pool = EnginePool(deployment.engines_config(), offloader, releases)
    try:
        candidate_target = _target_option(route, "'--route'", pool)
        baseline_target = _target_option(baseline_route, "'--baseline-route'", pool)
        baseline_resolve = captured_target if baseline_target is None else fixed_target(baseline_target)
        candidate_resolve = baseline_resolve if candidate_target is None else fixed_target(candidate_target)
        if release is not None:
            candidate_resolve = release_target(release, baseline_resolve)
        baseline: Scorer = EngineScorer(pool, baseline_resolve)
        return await run_replay(
            read_captures(captures),
            EngineScorer(pool, candidate_resolve),
            baseline=baseline,
            signatures=signatures,
            registry=registry,
            model=model,
            top_k=top_k,
            perturb=perturbation,
            repeats=repeats,
        )
    finally:
        await pool.close()
        offloader.close()


@click.command("replay")
@click.argument("captures", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--world",
    "world_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=DEFAULT_WORLD,
    show_default=True,
    help="the deployment whose engines, signatures and features replay uses",
)
@click.option(
    "--route",
    metavar="ENGINE/MODEL[/VERSION]",
    help="the candidate target (default: the target each call was served by)",
)
@click.option(
    "--release",
    "release_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="the candidate: a release manifest (its model's calls go to its route's first target)",
)
@click.option(
    "--baseline-route",
    metavar="ENGINE/MODEL[/VERSION]",
    help="the baseline target, scored twice to measure the noise (default: the target each call was served by)",
)
@click.option(
    "--perturb",
    metavar="KIND:NAME",
    help="replay changed inputs: drop-feature:FEATURE, drop-source:SOURCE or zero-table:TABLE",
)
@click.option("--top-k", type=click.IntRange(min=1), default=50, show_default=True, help="depth of the top-K overlap")
@click.option("--model", default=None, help="the model whose call is replayed (default: each request's last call)")
@click.option(
    "--repeats",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="baseline pairs scored per request to measure the noise (0: none)",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON, per request figures included")
def replay(
    captures: tuple[Path, ...],
    world_dir: Path,
    route: str | None,
    release_file: Path | None,
    baseline_route: str | None,
    perturb: str | None,
    top_k: int,
    model: str | None,
    repeats: int,
    as_json: bool,
) -> None:
    """Replay the captured requests in CAPTURE files (or directories of them) and compare their ranking
    with the captured one: top-K overlap, Kendall's tau, rank-biased overlap, per-head score deltas.

    Differences are reported only beyond the noise of the baseline (scored twice). Replaying the targets
    that served the captures, unchanged, reports exactly zero difference."""
    try:
        perturbation = None if perturb is None else Perturbation.parse(perturb)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--perturb'") from None
    if route is not None and release_file is not None:
        raise click.UsageError("give the candidate as --route or as --release, not both")
    try:
        release = None if release_file is None else load_release(release_file)
        report = asyncio.run(
            _replay(captures, world_dir, route, baseline_route, perturbation, top_k, model, repeats, release)
        )
    except (ReplayError, CaptureFormatError, DeclarationError, EngineError, FileNotFoundError, ReleaseError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        report.render(Console())
