"""Engine errors. Each carries the target and model so a log line says where a call went wrong."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every engine failure. `reason` is the plain words a caller sees for it (never a class name)."""

    reason = "engine error"

    def __init__(self, message: str, *, target: str = "", model: str = "") -> None:
        super().__init__(message)
        self.target = target
        self.model = model

    def __str__(self) -> str:
        where = "/".join(part for part in (self.target, self.model) if part)
        return f"[{where}] {super().__str__()}" if where else super().__str__()


class EngineUnavailable(EngineError):
    """The backend cannot be reached or is not ready (connection refused, model not loaded)."""

    reason = "unavailable"


class EngineOverloaded(EngineUnavailable):
    """Too much work is already waiting for this process's inference threads; rejected at once, not queued."""

    reason = "overloaded"


class EngineTimeout(EngineError):
    """The backend did not answer within the call's timeout."""

    reason = "timed out"


class ModelNotFound(EngineError):
    """The backend does not serve the requested model or version."""

    reason = "model not found"


class BadInput(EngineError):
    """Inputs do not match the model's signature (names, dtypes, shapes)."""

    reason = "bad input"


class BadOutput(EngineError):
    """The backend answered with tensors that are missing, mis-shaped or of the wrong dtype."""

    reason = "bad output"
