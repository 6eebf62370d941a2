"""Step types by name, so YAML workflows can name them. Built per application: no global registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from remix.step import Step


class StepParams(BaseModel):
    """Base of every step's parameter model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=StepParams)


@dataclass(frozen=True)
class StepType(Generic[P]):
    """A registered step type: its YAML name, its parameter model and how to build it.

    `build(name, params, services)` returns a ready Step; it must not do I/O. `services` are the
    collaborators the step library injects (e.g. `remix.steps.services.Services`); the core never looks
    inside them.
    """

    type_name: str
    params: type[P]
    build: Callable[[str, P, Any], Step]


class StepRegistry:
    def __init__(self, types: Iterable[StepType[Any]] = ()) -> None:
        self._types: dict[str, StepType[Any]] = {}
        for step_type in types:
            self.register(step_type)

    def register(self, step_type: StepType[Any]) -> None:
        if step_type.type_name in self._types:
            raise ValueError(f"step type {step_type.type_name!r} is already registered")
        self._types[step_type.type_name] = step_type

    def get(self, type_name: str) -> StepType[Any]:
        try:
            return self._types[type_name]
        except KeyError:
            known = ", ".join(sorted(self._types)) or "none"
            raise KeyError(f"unknown step type {type_name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._types)
