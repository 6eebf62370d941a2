"""A release: one logical model's artifacts per engine, its signature, the table versions it was trained
with, its route and the offline statistics its trainer wrote, as one YAML file the trainer writes.

```yaml
release: feed_ranker-3f2a9c1d      # unique; names the release in responses, logs and metrics
model: feed_ranker                 # the logical model it serves
signature: ../models/feed_ranker.signature.yaml
artifacts:                         # engine -> what it serves for this release
  local_onnx: {file: ../models/ranker.onnx}   # an in-process engine loads the file while serving
  triton: {model: ranker, version: "3"}       # a model server must already serve it
tables: {item_embedding: 9c1e..., member_embedding: 77ab...}
route:                             # targets name engines; their model is the release's artifact there
  targets: [{engine: local_onnx}]
  fallback: [{engine: triton}]
offline_stats: feed_ranker-3f2a9c1d.stats.kll
validation:
  sample: feed_ranker-3f2a9c1d.validation.npz   # inputs (in.<tensor>) and expected outputs (out.<output>)
  tolerance: 1.0e-4
  warmup_requests: 20
  warmup_budget_s: 0.25
```

Paths are relative to the manifest. The release's route is installed under `<model>@<release>`, beside
the routes in force, so applying a release is one switch of what requests are served by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from engines.config import BreakerConfig, RouteConfig, TargetConfig

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Decl(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Artifact(_Decl):
    """`file`: a model file an in-process engine loads; or `model` (and `version`): what a model server
    serves. Exactly one of `file` and `model`."""

    file: Path | None = None
    model: str | None = None
    version: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Artifact:
        if (self.file is None) == (self.model is None):
            raise ValueError("an artifact names exactly one of `file` (in-process) and `model` (a model server)")
        if self.file is not None and self.version is not None:
            raise ValueError("`version` goes with `model`; a file's version is in its own metadata")
        return self


class ReleaseTarget(_Decl):
    """A route target of the release: the engine, its model being the release's artifact there."""

    engine: str
    weight: Annotated[float, Field(ge=0.0)] = 1.0
    timeout_s: PositiveFloat | None = None
    breaker: BreakerConfig | None = BreakerConfig()


class ReleaseRoute(_Decl):
    targets: Annotated[list[ReleaseTarget], Field(min_length=1)]
    fallback: list[ReleaseTarget] = Field(default_factory=list)
    shadow: list[ReleaseTarget] = Field(default_factory=list)


class Validation(_Decl):
    sample: Path | None = None
    tolerance: Annotated[float, Field(ge=0.0)] = 1e-4
    warmup_requests: Annotated[int, Field(ge=0)] = 20
    warmup_budget_s: PositiveFloat = 0.25
    workflow: str | None = None
    """The workflow warm-up requests run (default: every workflow that calls the release's model)."""
    warmup_members: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 3, 42])


class ReleaseDecl(_Decl):
    release: Annotated[str, Field(pattern=_NAME)]
    model: Annotated[str, Field(min_length=1)]
    signature: Path
    artifacts: Annotated[dict[str, Artifact], Field(min_length=1)]
    tables: dict[str, str] = Field(default_factory=dict)
    route: ReleaseRoute
    offline_stats: Path | None = None
    validation: Validation = Validation()
    description: str = ""

    @model_validator(mode="after")
    def _targets_have_artifacts(self) -> ReleaseDecl:
        for role, targets in (("targets", self.route.targets), ("fallback", self.route.fallback)):
            for index, target in enumerate(targets):
                if target.engine not in self.artifacts:
                    raise ValueError(
                        f"route.{role}[{index}] names engine {target.engine!r}, which has no artifact "
                        f"(artifacts: {sorted(self.artifacts)})"
                    )
        return self


class ReleaseError(ValueError):
    """A release manifest that cannot be read: the file and what is wrong, in one line."""


@dataclass(frozen=True)
class Release:
    """A manifest read and resolved: paths absolute, the route as the router takes it."""

    decl: ReleaseDecl
    path: Path

    @property
    def name(self) -> str:
        return self.decl.release

    @property
    def model(self) -> str:
        return self.decl.model

    @property
    def route_name(self) -> str:
        """The route this release's model is installed under, beside the routes in force."""
        return f"{self.decl.model}@{self.decl.release}"

    def served_name(self, engine: str) -> str:
        """The model name the engine serves this release's artifact under."""
        artifact = self.decl.artifacts[engine]
        return artifact.model if artifact.model is not None else self.route_name

    def file(self, engine: str) -> Path | None:
        artifact = self.decl.artifacts[engine]
        return None if artifact.file is None else self._resolve(artifact.file)

    @property
    def signature_path(self) -> Path:
        return self._resolve(self.decl.signature)

    @property
    def offline_stats_path(self) -> Path | None:
        return None if self.decl.offline_stats is None else self._resolve(self.decl.offline_stats)

    @property
    def sample_path(self) -> Path | None:
        sample = self.decl.validation.sample
        return None if sample is None else self._resolve(sample)

    def route(self) -> RouteConfig:
        def target(t: ReleaseTarget) -> TargetConfig:
            artifact = self.decl.artifacts.get(t.engine)
            version = artifact.version if artifact is not None else None
            model = self.served_name(t.engine) if artifact is not None else self.decl.model
            return TargetConfig(
                engine=t.engine, model=model, version=version, weight=t.weight, timeout_s=t.timeout_s, breaker=t.breaker
            )

        r = self.decl.route
        return RouteConfig(
            targets=[target(t) for t in r.targets],
            fallback=[target(t) for t in r.fallback],
            shadow=[target(t) for t in r.shadow],
        )

    def _resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.path.parent / path).resolve()


def load_release(path: Path) -> Release:
    """Read and check a release manifest. Raises `ReleaseError` naming the file (its name: the message may
    reach an admin client, which must not learn the gateway's paths) and the key path."""
    path = Path(path)
    name = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ReleaseError(f"{name}: no such release manifest") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        kind = "not valid YAML" if isinstance(error, yaml.YAMLError) else "cannot be read as text"
        raise ReleaseError(f"{name}: {kind}") from None
    if not isinstance(raw, dict):
        raise ReleaseError(f"{name}: a release manifest is a mapping (release, model, artifacts, route, ...)")
    try:
        decl = ReleaseDecl.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ReleaseError(f"{name}: {where}: {first['msg']}") from None
    return Release(decl=decl, path=path.resolve())
