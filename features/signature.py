"""Model signatures: a logical model's input tensors as ordered lists of registry features, its outputs as
named heads. Written by the trainer beside the model it exports (`<model>.signature.yaml`), read by the
gateway, which assembles inputs from them and checks them against each serving engine's metadata.

```yaml
model: feed_ranker              # the logical model name routes serve
candidate_entity: item          # rows are candidates of this entity
inputs:
  - name: features              # the tensor's name on the engine
    dtype: float32              # float32 | int64
    features: [member_embedding.vector, item_embedding.vector, candidate.first_pass_score]
outputs:
  - {name: scores, heads: [click, comment, share, long_dwell]}
```
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.errors import DeclarationError, nearest
from features.registry import Feature, FeatureRegistry, feature_width


class _Decl(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputDecl(_Decl):
    """`layout`: `matrix` gives (n, width); `vector` gives (n,) and needs a width of 1 (ids a model takes
    as a 1-D tensor)."""

    name: Annotated[str, Field(min_length=1)]
    dtype: Literal["float32", "int64"] = "float32"
    layout: Literal["matrix", "vector"] = "matrix"
    features: Annotated[list[str], Field(min_length=1)]


class OutputDecl(_Decl):
    """`heads`: the output's columns (one head per column; a single head may be shape (n,) or (n, 1))."""

    name: Annotated[str, Field(min_length=1)]
    heads: Annotated[list[str], Field(min_length=1)]


class SignatureDecl(_Decl):
    model: Annotated[str, Field(min_length=1)]
    candidate_entity: Annotated[str, Field(min_length=1)]
    inputs: Annotated[list[InputDecl], Field(min_length=1)]
    outputs: Annotated[list[OutputDecl], Field(min_length=1)]
    description: str = ""

    @model_validator(mode="after")
    def _unique(self) -> SignatureDecl:
        for kind, names in (("input", [i.name for i in self.inputs]), ("output", [o.name for o in self.outputs])):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names in {names}")
        heads = [h for o in self.outputs for h in o.heads]
        if len(set(heads)) != len(heads):
            raise ValueError(f"duplicate heads in {heads}")
        return self


@dataclass(frozen=True)
class InputTensor:
    name: str
    dtype: str
    features: tuple[Feature, ...]
    layout: str = "matrix"

    @functools.cached_property
    def width(self) -> int:
        return sum(feature_width(f) for f in self.features)

    def columns(self) -> tuple[tuple[Feature, int, int], ...]:
        """(feature, start, stop) of each feature's columns in the tensor, in order."""
        spans, start = [], 0
        for feature in self.features:
            spans.append((feature, start, start + feature_width(feature)))
            start += feature_width(feature)
        return tuple(spans)


@dataclass(frozen=True)
class ModelSignature:
    """A signature resolved against the registry: every feature known, widths computed."""

    model: str
    candidate_entity: str
    inputs: tuple[InputTensor, ...]
    outputs: Mapping[str, tuple[str, ...]]  # output name -> heads
    source: str

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(h for heads in self.outputs.values() for h in heads)

    def output_of(self, head: str) -> tuple[str, int]:
        """(output name, column) holding `head`."""
        for output, heads in self.outputs.items():
            if head in heads:
                return output, heads.index(head)
        raise KeyError(f"model {self.model!r} has no head {head!r} (heads: {list(self.heads)})")


def resolve_signature(decl: SignatureDecl, registry: FeatureRegistry, source: str) -> ModelSignature:
    """`decl` checked against `registry`: unknown features (with the nearest names), a candidate entity
    that is not one, int64 tensors of float features and the reverse are `DeclarationError`s."""
    issues: list[tuple[str, str]] = []
    if decl.candidate_entity not in registry.candidate_entities():
        issues.append(
            (
                "candidate_entity",
                f"{decl.candidate_entity!r} is not an entity keyed by candidate"
                f"{nearest(decl.candidate_entity, registry.candidate_entities())}",
            )
        )
    tensors = []
    for i, tensor in enumerate(decl.inputs):
        resolved: list[Feature] = []
        for j, name in enumerate(tensor.features):
            try:
                feature = registry.feature(name)
            except KeyError as error:
                issues.append((f"inputs[{i}].features[{j}]", str(error.args[0])))
                continue
            if (tensor.dtype == "int64") != feature.is_ids:
                kind = "an id feature" if feature.is_ids else "a float feature"
                issues.append(
                    (f"inputs[{i}].features[{j}]", f"{name!r} is {kind}; tensor {tensor.name!r} is {tensor.dtype}")
                )
            resolved.append(feature)
        built = InputTensor(name=tensor.name, dtype=tensor.dtype, features=tuple(resolved), layout=tensor.layout)
        if built.layout == "vector" and len(resolved) == len(tensor.features) and built.width != 1:
            issues.append(
                (f"inputs[{i}].layout", f"a vector input takes one value per row, {tensor.name!r} has {built.width}")
            )
        tensors.append(built)
    if issues:
        raise DeclarationError(source, issues)
    return ModelSignature(
        model=decl.model,
        candidate_entity=decl.candidate_entity,
        inputs=tuple(tensors),
        outputs={o.name: tuple(o.heads) for o in decl.outputs},
        source=source,
    )
