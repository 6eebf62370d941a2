"""A declared model's heads for a set of candidates: assemble its inputs, call it, read its outputs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engines.base import Models
from features import Frame
from features.signature import ModelSignature
from remix.context import Context
from remix.failures import DependencyFailure
from remix.steps._model_call import infer, output
from remix.steps.scoring import DeclaredInputs

F32 = npt.NDArray[np.float32]


async def head_scores(
    ctx: Context,
    step: str,
    models: Models,
    signature: ModelSignature,
    inputs: DeclaredInputs,
    frame: Frame,
    *,
    rows: npt.NDArray[np.int64] | None = None,
) -> F32:
    """float32 (n, len(signature.heads)): each output's columns, in the signature's head order. A missing,
    mis-shaped or non-finite output is a DependencyFailure (see `output`). `rows`: the candidates' ids."""
    tensors = inputs.plan.tensors(frame, signature.inputs)
    outputs = await infer(ctx, step, models, signature.model, tensors, rows=rows)
    columns = []
    for name, heads in signature.outputs.items():
        shape = (frame.n,) if len(heads) == 1 else (frame.n, len(heads))
        try:
            value = output(outputs, name, shape, step=step, model=signature.model)
        except DependencyFailure:  # the route answered, but not what the model declares
            ctx.failed_routes.add(ctx.serving.route(signature.model))
            raise
        columns.append(value.reshape(frame.n, len(heads)))
    return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)
