"""Named numpy tensors and model descriptions shared by every engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Tensors = Mapping[str, np.ndarray]
"""Input or output tensors by name. Engines never copy element by element."""


@dataclass(frozen=True)
class ModelRef:
    """A concrete model on one backend: name plus optional version (or version label) and signature."""

    name: str
    version: str | None = None
    signature: str | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}/{self.version}"


@dataclass(frozen=True)
class TensorSpec:
    """dtype is a numpy dtype name ('float32'); -1 in `shape` marks a variable dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"model {self.name} has no input {name!r}; inputs: {[s.name for s in self.inputs]}")
