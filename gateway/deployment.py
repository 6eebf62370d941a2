"""A deployment directory: what products are served, as data (no Python of theirs).

    <root>/features/*.yaml           feature declarations (entities, views, derived features)
    <root>/models/*.signature.yaml   model signatures; model files beside them
    <root>/workflows/*.yaml          workflows
    <root>/engines/*.yaml            engines, routes and candidate services (merged; names unique)
    <root>/indexes/                  ANN indexes, by table and table version
    <root>/store/                    the embedded store's tables (the default store)
    <root>/world.json                the manifest whose `tables` pin the versions models were trained with

Relative model paths in engines files are relative to `<root>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engines.config import EnginesConfig
from features.errors import DeclarationError, from_validation
from remix._yaml import strict_load

_LOCAL_KINDS = ("onnx", "xgboost")


class Deployment:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def workflows_dir(self) -> Path:
        return self.root / "workflows"

    @property
    def engines_dir(self) -> Path:
        return self.root / "engines"

    @property
    def index_root(self) -> Path:
        return self.root / "indexes"

    @property
    def store_root(self) -> Path:
        return self.root / "store"

    @property
    def manifest(self) -> Path:
        return self.root / "world.json"

    def engines_config(self) -> EnginesConfig:
        """Every `engines/*.yaml` merged; a name defined in two files, or a bad file, is a
        `DeclarationError` naming the file and key path."""
        merged: dict[str, dict[str, Any]] = {"engines": {}, "routes": {}, "candidate_services": {}}
        first: dict[tuple[str, str], Path] = {}
        files = sorted(self.engines_dir.glob("*.yaml")) if self.engines_dir.is_dir() else []
        if not files:
            raise DeclarationError(str(self.engines_dir), [("", "no engines files (*.yaml): nothing would serve")])
        for path in files:
            try:
                raw = strict_load(path.read_text())
            except (OSError, yaml.YAMLError) as error:
                raise DeclarationError(str(path), [("", f"cannot read: {error}".replace("\n", " "))]) from None
            if not isinstance(raw, dict):
                raise DeclarationError(str(path), [("", "expected a mapping of engines, routes, candidate_services")])
            unknown = sorted(set(raw) - set(merged))
            if unknown:
                raise DeclarationError(str(path), [(unknown[0], f"unknown section (sections: {sorted(merged)})")])
            for section, entries in raw.items():
                if not isinstance(entries, dict):
                    raise DeclarationError(str(path), [(section, "expected a mapping of names")])
                for name, entry in entries.items():
                    if (section, name) in first:
                        message = f"{section[:-1]} {name!r} is also defined in {first[section, name]}"
                        raise DeclarationError(str(path), [(f"{section}.{name}", message)])
                    first[section, name] = path
                    merged[section][name] = self._resolve_paths(entry) if section == "engines" else entry
        try:
            return EnginesConfig.model_validate(merged)
        except ValidationError as error:
            raise from_validation(str(self.engines_dir), error) from None

    def _resolve_paths(self, engine: Any) -> Any:
        if isinstance(engine, dict) and engine.get("kind") in _LOCAL_KINDS and isinstance(engine.get("models"), dict):
            models = {n: str(self.root / p) if isinstance(p, str) else p for n, p in engine["models"].items()}
            return {**engine, "models": models}
        return engine
