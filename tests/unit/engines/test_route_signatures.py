"""Targets of one route must take the same tensors: checked when routes start and when they are swapped."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engines.config import RouteConfig
from engines.fake import FakeEngine
from engines.route_signatures import signature_conflicts
from engines.router import Router
from engines.types import ModelMetadata, TensorSpec

ROWS = TensorSpec("features", "float32", (-1, 77))
SCORES = TensorSpec("scores", "float32", (-1,))


def signature(inputs: tuple[TensorSpec, ...] = (ROWS,), outputs: tuple[TensorSpec, ...] = (SCORES,)) -> ModelMetadata:
    return ModelMetadata(name="ranker", version="1", inputs=inputs, outputs=outputs)


def engine(name: str, meta: ModelMetadata) -> FakeEngine:
    answer = {"scores": np.zeros(1, np.float32)}
    return FakeEngine(name, {"ranker": answer}, metadata={"ranker": meta})


def route(**lists: list[str]) -> RouteConfig:
    return RouteConfig.model_validate(
        {kind: [{"engine": name, "model": "ranker"} for name in names] for kind, names in lists.items()}
    )


def test_identical_and_compatible_signatures_conflict_in_nothing() -> None:
    fixed_rows = signature(inputs=(TensorSpec("features", "float32", (16, 77)),))
    extra_output = signature(outputs=(SCORES, TensorSpec("logits", "float32", (-1,))))
    others = [("b", signature(), True), ("c", fixed_rows, True), ("d", extra_output, True)]
    assert signature_conflicts(("a", signature()), others) == []


@pytest.mark.parametrize(
    ("other", "outputs_read", "problem"),
    [
        (signature(inputs=(TensorSpec("features", "float64", (-1, 77)),)), True, "input 'features' is float64 on b"),
        (signature(inputs=(TensorSpec("features", "float32", (-1, 76)),)), True, "has shape [-1, 76] on b, [-1, 77]"),
        (signature(inputs=(TensorSpec("x", "float32", (-1, 77)),)), True, "b has no input 'features' (which a has)"),
        (signature(inputs=(ROWS, TensorSpec("mask", "bool", (-1,)))), True, "b takes inputs ['mask'] that a does not"),
        (signature(outputs=(TensorSpec("score", "float32", (-1,)),)), True, "b has no output 'scores'"),
    ],
    ids=["dtype", "shape", "input-name", "extra-input", "output-name"],
)
def test_differences_are_named(other: ModelMetadata, outputs_read: bool, problem: str) -> None:
    problems = signature_conflicts(("a", signature()), [("b", other, outputs_read)])
    assert problems
    assert any(problem in found for found in problems), problems


def test_a_shadow_is_held_to_the_inputs_only_and_empty_signatures_are_not_compared() -> None:
    other_outputs = signature(outputs=(TensorSpec("score", "float32", (-1,)),))
    assert signature_conflicts(("a", signature()), [("shadow", other_outputs, False)]) == []
    assert signature_conflicts(("a", signature()), [("fake", signature(inputs=(), outputs=()), True)]) == []


async def test_start_refuses_a_route_whose_fallback_takes_other_inputs() -> None:
    wide = signature(inputs=(TensorSpec("features", "float32", (-1, 80)),))
    router = Router(
        {"ranker": route(targets=["a"], fallback=["b"])}, {"a": engine("a", signature()), "b": engine("b", wide)}
    )
    with pytest.raises(ValueError, match=r"route 'ranker': .*'features' has shape \[-1, 80\] on b/ranker, \[-1, 77\]"):
        await router.start()


async def test_a_swap_to_a_target_with_other_inputs_is_refused_and_the_old_routes_stay() -> None:
    engines: dict[str, Any] = {
        "a": engine("a", signature()),
        "b": engine("b", signature()),
        "c": engine("c", signature(inputs=(TensorSpec("features", "float16", (-1, 77)),))),
    }
    router = Router({"ranker": route(targets=["a"])}, engines)
    await router.start()
    await router.swap_routes({"ranker": route(targets=["a", "b"])})  # same signature: accepted
    with pytest.raises(ValueError, match="input 'features' is float16 on c/ranker, float32 on a/ranker"):
        await router.swap_routes({"ranker": route(targets=["a"], shadow=["c"])})
    assert [t.engine for t in router.routes["ranker"].targets] == ["a", "b"]
    assert router.routes["ranker"].shadow == []
