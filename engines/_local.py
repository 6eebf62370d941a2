"""What the in-process engines share: their table of loaded models and the offloaded, bounded call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from engines._offload import Offloader
from engines.errors import EngineError, EngineTimeout, EngineUnavailable, ModelNotFound
from engines.types import ModelMetadata, ModelRef

T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True)
class Loaded(Generic[S]):
    """One loaded model: the runtime object (session, booster) and its signature and version."""

    runtime: S
    metadata: ModelMetadata


class ModelTable(Generic[S]):
    """Loaded models of one engine, with the lifecycle checks every lookup needs."""

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._models: dict[str, Loaded[S]] = {}
        self.started = False
        self.closed = False

    def add(self, loaded: Loaded[S]) -> None:
        self._models[loaded.metadata.name] = loaded

    async def load(
        self, offloader: Offloader, paths: Mapping[str, Path], load: Callable[[str, Path], Loaded[S]]
    ) -> None:
        """Load every model off the event loop, then mark the table started.

        Raises `EngineUnavailable` naming the model whose file could not be loaded.
        """
        for model, path in paths.items():
            await self.load_one(offloader, model, path, load)
        self.started = True

    async def load_one(
        self, offloader: Offloader, model: str, path: Path, load: Callable[[str, Path], Loaded[S]]
    ) -> None:
        """Load one more model off the event loop and add it (a release's artifact, at run time); a name
        already loaded is replaced. Raises `EngineUnavailable` naming the file that could not be loaded."""
        try:
            loaded = await offloader.run(load, model, path)
        except EngineError:
            raise
        except Exception as error:
            raise EngineUnavailable(f"cannot load {path.name}: {error}", target=self._engine, model=model) from error
        self.add(loaded)

    @property
    def ready(self) -> bool:
        return self.started and not self.closed

    def get(self, model: ModelRef) -> Loaded[S]:
        """The model `model` names; `EngineUnavailable` before start or after close, `ModelNotFound` for an
        unknown name or a version other than the one loaded."""
        if self.closed or not self.started:
            state = "closed" if self.closed else "not started"
            raise EngineUnavailable(f"engine is {state}", target=self._engine, model=str(model))
        loaded = self._models.get(model.name)
        if loaded is None:
            raise ModelNotFound(
                f"no model {model.name!r}; serving {sorted(self._models)}", target=self._engine, model=str(model)
            )
        if model.version is not None and model.version != loaded.metadata.version:
            raise ModelNotFound(
                f"model {model.name!r} has no version {model.version!r}; serving {loaded.metadata.version!r}",
                target=self._engine,
                model=str(model),
            )
        return loaded

    def close(self) -> None:
        self.closed = True
        self._models.clear()


RunOn = Literal["auto", "loop", "threads"]
"""Where an in-process engine runs its calls. `threads`: the shared `Offloader` (the loop stays free while
the call runs). `loop`: inline on the event loop, the right place for a CPU engine in a process per core:
measured on the demo feed (2 cores, in process), a request took 5.16 ms p50 with first-pass, ranker and
ANN calls on threads and 4.76 ms with all of them inline, because each worker thread waits for the GIL to
hand its result back while the loop computes features. `auto`: `loop`, except an engine whose work waits on
a device (ONNX Runtime with a GPU provider first), which is worth a thread."""


async def call_offloaded(
    offloader: Offloader,
    fn: Callable[..., T],
    *args: Any,
    timeout_s: float | None,
    target: str,
    model: str,
    translate: Callable[[Exception], EngineError | None] = lambda _error: None,
    inline: bool = False,
) -> T:
    """Run `fn(*args)` in `offloader` within `timeout_s`, raising only `EngineError`s.

    Expiry -> `EngineTimeout` (the thread runs on, holding its offloader slot; see `Offloader`); a full
    offloader -> `EngineOverloaded`; any other exception -> `translate(error)` when it returns one, else
    a plain `EngineError`. Cancellation of the caller propagates unchanged.

    `inline`: run `fn` on the calling thread (the event loop) instead: no hand-off, no queue, and no cut
    at `timeout_s` once started (a call with no time left is refused with `EngineTimeout`). What a CPU
    engine in a process per core wants: a thread hand-off costs more than the call whenever the loop has
    Python work of its own, because the worker waits for the GIL to hand its result back (see RunOn).
    """
    try:
        if inline:
            if timeout_s is not None and timeout_s <= 0:
                raise EngineTimeout("no time left for the call", target=target, model=model)
            return fn(*args)
        async with asyncio.timeout(timeout_s) as scope:
            return await offloader.run(fn, *args)
    except TimeoutError as error:
        if not inline and scope.expired():
            raise EngineTimeout(f"no answer within {timeout_s}s", target=target, model=model) from None
        raise EngineError(f"inference failed: {error!r}", target=target, model=model) from error
    except EngineUnavailable as error:  # from the offloader itself: full (EngineOverloaded) or closed
        raise type(error)(error.args[0], target=target, model=model) from None
    except EngineError:
        raise
    except Exception as error:
        translated = translate(error)
        if translated is not None:
            raise translated from error
        raise EngineError(f"inference failed: {error}", target=target, model=model) from error
