"""One model call on behalf of a step: routed by member id, recorded in the context."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engines.base import Models
from engines.types import Tensors
from remix import spans
from remix.context import Context, ModelUse
from remix.failures import Category, DependencyFailure, Failure


async def infer(
    ctx: Context, step: str, models: Models, model: str, inputs: Tensors, *, rows: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Calls `model` through the route the request's release names for it (`ctx.serving`), with the
    request's remaining budget, and returns its outputs. `rows`: the candidate ids of the input rows.

    The call is appended to `ctx.models` (the request depended on it; health tracking and capture read
    it); a `degraded_reason` (e.g. a fallback target answered) marks the request degraded without failing
    the step.
    """
    route = ctx.serving.route(model)
    with spans.span(f"model {model}", {"quasar.model": model}, on=ctx.tracing) as span:
        try:
            call = await models.infer(
                route, inputs, timeout_s=ctx.budget.remaining_s(), routing_key=ctx.request.member_id
            )
        except Exception:  # not cancellation: the caller leaving is not the route failing
            ctx.failed_routes.add(route)
            raise
        if span is not None:
            span.set_attribute("quasar.target", call.target)
            span.set_attribute("quasar.model_version", call.version)
    ctx.models.append(
        ModelUse(
            model=model,
            target=call.target,
            version=call.version,
            route=route,
            rows=rows,
            inputs=inputs,
            outputs=call.outputs,
        )
    )
    if call.degraded_reason is not None:
        ctx.failed_routes.add(route)
        ctx.degrade(Failure(step=step, category=Category.DEPENDENCY, message=f"{model}: {call.degraded_reason}"))
    return call.outputs


def output(
    outputs: dict[str, np.ndarray], name: str, shape: tuple[int, ...], *, step: str, model: str
) -> npt.NDArray[np.float32]:
    """Output `name` as finite float32 of `shape` (a trailing axis of 1 is squeezed for 1-d shapes).

    A missing, mis-shaped or non-finite output is the backend's fault: DependencyFailure.
    """
    if name not in outputs:
        raise DependencyFailure(f"{model} returned no {name!r} output (got {sorted(outputs)})", step=step)
    value = np.asarray(outputs[name])
    if len(shape) == 1 and value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.shape != shape:
        raise DependencyFailure(f"{model} output {name!r} has shape {value.shape}, expected {shape}", step=step)
    if not np.issubdtype(value.dtype, np.number):
        raise DependencyFailure(f"{model} output {name!r} has dtype {value.dtype}, expected a number", step=step)
    value = value.astype(np.float32, copy=False)
    if not np.isfinite(value).all():
        raise DependencyFailure(f"{model} output {name!r} has non-finite values", step=step)
    return value
