"""Reading declarations from a deployment directory: `features/*.yaml` and `models/*.signature.yaml`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from features.declarations import FeaturesDocument
from features.errors import DeclarationError, from_validation
from features.registry import FeatureRegistry
from features.signature import ModelSignature, SignatureDecl, resolve_signature
from remix._yaml import strict_load

SIGNATURE_SUFFIX = ".signature.yaml"


M = TypeVar("M", bound=BaseModel)


def _parse(path: Path, model: type[M]) -> M:
    source = str(path)
    try:
        raw: Any = strict_load(path.read_text())
    except OSError as error:
        raise DeclarationError(source, [("", f"cannot read: {error.strerror}")]) from None
    except yaml.YAMLError as error:
        raise DeclarationError(source, [("", f"not valid YAML: {error}".replace("\n", " "))]) from None
    if not isinstance(raw, dict):
        raise DeclarationError(source, [("", f"expected a mapping at the top, got {type(raw).__name__}")])
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise from_validation(source, error) from None


def load_registry(directory: Path) -> FeatureRegistry:
    """The registry of every `*.yaml` under `directory` (sorted by name); an empty registry when the
    directory does not exist."""
    files = sorted(Path(directory).glob("*.yaml")) if Path(directory).is_dir() else []
    return FeatureRegistry((str(path), _parse(path, FeaturesDocument)) for path in files)


def load_signatures(directory: Path, registry: FeatureRegistry) -> dict[str, ModelSignature]:
    """model name -> its signature, from every `*.signature.yaml` under `directory`."""
    signatures: dict[str, ModelSignature] = {}
    if not Path(directory).is_dir():
        return signatures
    for path in sorted(Path(directory).glob(f"*{SIGNATURE_SUFFIX}")):
        decl = _parse(path, SignatureDecl)
        if decl.model in signatures:
            first = signatures[decl.model].source
            raise DeclarationError(str(path), [("model", f"model {decl.model!r} is already declared in {first}")])
        signatures[decl.model] = resolve_signature(decl, registry, str(path))
    return signatures


def load_signature(path: Path, registry: FeatureRegistry) -> ModelSignature:
    """One `*.signature.yaml` resolved against `registry` (a release's signature is compared with it)."""
    return resolve_signature(_parse(Path(path), SignatureDecl), registry, str(path))


def write_signature(path: Path, decl: SignatureDecl) -> None:
    """Write a signature declaration (the trainer calls this beside the model it exports)."""
    data = decl.model_dump(mode="json", exclude_defaults=False)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, width=120))
