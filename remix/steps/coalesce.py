"""First-pass scoring shared by the sources of one request: one frame and one model call instead of one each.

The sources of a feed run side by side and most score their candidates with the same first-pass model and
the same features. Scoring each set on its own repeats the fixed cost of a frame (a store read per view,
every derived feature, the tensor) and of a model call (a thread hand-off) once per source; that overhead,
not the rows, dominated a request's profile. A `CoalescedScorer` is built once per (model, features) and
shared by every source declaring that pair; per request, the ids of the sources that ask for scores in the
same turn of the event loop (retrievals answered from memory all do) are scored as one batch, and each
source gets back its own rows.

Contract, per `score` call:
- Scores and features are exactly what scoring that source alone gives: every feature and the model are
  row-wise, and the rows of a batch are the callers' ids concatenated (no dedup: a repeated id is scored
  twice, which is cheaper than finding it).
- A failure of the batch (store, model) is raised to every caller in it; each applies its own
  `on_scoring_failure`.
- A caller cancelled (its own timeout) leaves the batch; the batch is cancelled when nobody waits for it.
- The batch runs under the largest remaining budget among its callers (each caller's own timer still cuts
  that caller), and is recorded once in the request's model calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from features import Frame
from features.registry import Feature
from features.signature import ModelSignature
from remix.context import Context
from remix.keys import Key
from remix.steps._model_scores import head_scores
from remix.steps.scoring import DeclaredInputs
from remix.steps.services import Services

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Scored:
    """One caller's share of a batch: `scores` (len(ids),) for its ids, and the batch's frame, whose rows
    `rows(i)` are this caller's i-th ids. `per_row`: the frame's names with a value per row (request-level
    ones, one row broadcast, are not), found once for the batch's callers."""

    frame: Frame
    start: int
    scores: F32
    per_row: tuple[str, ...]

    def rows(self, index: I64) -> I64:
        return index + self.start


@dataclass
class _Caller:
    step: str
    ctx: Context
    ids: I64
    answer: asyncio.Future[Scored]


@dataclass
class _Batch:
    callers: list[_Caller] = field(default_factory=list)
    closed: bool = False
    task: asyncio.Task[None] | None = None


class CoalescedScorer:
    """Scores candidate ids with `signature`'s model (its first head) from `features`; see the module doc."""

    def __init__(self, services: Services, signature: ModelSignature, features: Sequence[Feature]) -> None:
        names = ", ".join(f.name for f in features)
        self.inputs = DeclaredInputs(services, features, step=f"first pass {signature.model}")
        self._signature = signature
        self._models = services.models
        self._slot: Key[_Batch] = Key(f"scoring batch {signature.model}: {names}", _Batch)

    @classmethod
    def shared(cls, services: Services, signature: ModelSignature, features: Sequence[Feature]) -> CoalescedScorer:
        """The one scorer of (model, features) among the steps built from `services` (made by the first)."""
        memo_key = ("coalesced scorer", signature.model, tuple(f.name for f in features))
        scorer = services.memo.get(memo_key)
        if not isinstance(scorer, CoalescedScorer):
            scorer = services.memo[memo_key] = cls(services, signature, features)
        return scorer

    async def score(self, ctx: Context, step: str, ids: I64) -> Scored:
        """`ids`' first-pass scores, computed with those of the request's other sources asking now."""
        batch = ctx.get(self._slot) if ctx.has(self._slot) else None
        if batch is None or batch.closed:
            batch = _Batch()
            ctx.set(self._slot, batch)
            # A task starts on the next turn of the loop: sources whose ids are ready this turn join first.
            batch.task = asyncio.get_running_loop().create_task(self._run(batch))
        caller = _Caller(step, ctx, ids, asyncio.get_running_loop().create_future())
        batch.callers.append(caller)
        try:
            return await caller.answer
        except asyncio.CancelledError:
            if batch.task is not None and all(c.answer.done() for c in batch.callers):
                batch.task.cancel()  # nobody is waiting any more
            raise

    async def _run(self, batch: _Batch) -> None:
        batch.closed = True
        callers = [c for c in batch.callers if not c.answer.done()]
        try:
            if callers:
                await self._score(callers)
        except asyncio.CancelledError:
            for caller in callers:
                caller.answer.cancel()
            raise
        except Exception as error:  # every caller sees the batch's failure; nothing is left waiting
            for caller in callers:
                if not caller.answer.done():
                    caller.answer.set_exception(error)

    async def _score(self, callers: list[_Caller]) -> None:
        # The longest budget among the callers: each caller's own timer still cuts it off.
        ctx = max(callers, key=lambda c: _remaining(c.ctx)).ctx
        ids = callers[0].ids if len(callers) == 1 else np.concatenate([c.ids for c in callers])
        frame, _ = await self.inputs.frame(ctx, ids)
        steps = "+".join(c.step for c in callers)
        scores = (await head_scores(ctx, steps, self._models, self._signature, self.inputs, frame, rows=ids))[:, 0]
        per_row = tuple(name for name, value in frame.values.items() if len(value) == frame.n)
        start = 0
        for caller in callers:
            stop = start + len(caller.ids)
            if len(callers) > 1:
                others = ", ".join(c.step for c in callers if c is not caller)
                caller.ctx.notes.setdefault(caller.step, f"first pass scored with {others} in one call")
            if not caller.answer.done():
                caller.answer.set_result(Scored(frame=frame, start=start, scores=scores[start:stop], per_row=per_row))
            start = stop


def _remaining(ctx: Context) -> float:
    left = ctx.budget.remaining_s()
    return float("inf") if left is None else left
