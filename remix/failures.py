"""Failures as values: every error reaching the executor is classified by who is responsible."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from engines.errors import EngineError, EngineTimeout
from kvstore.errors import StoreError, StoreTimeout


class Category(enum.Enum):
    CLIENT = "client"  # the caller sent something we cannot serve
    DEPENDENCY = "dependency"  # a backend (model server, store) failed
    TIMEOUT = "timeout"  # the budget ran out
    INTERNAL = "internal"  # a bug in Quasar


class WorkflowError(Exception):
    """An error raised by a step or the executor, carrying its category and the step it came from."""

    def __init__(self, message: str, *, category: Category, step: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.step = step

    def __str__(self) -> str:
        base = super().__str__()
        return f"{self.step}: {base}" if self.step else base


class InvalidRequest(WorkflowError):
    """The request cannot be served as asked (unknown workflow, bad context value)."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message, category=Category.CLIENT, step=step)


class StepTimeout(WorkflowError):
    """A step did not finish within min(its timeout, the request's remaining budget)."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message, category=Category.TIMEOUT, step=step)


class DependencyFailure(WorkflowError):
    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message, category=Category.DEPENDENCY, step=step)


def classify(error: BaseException) -> Category:
    """Category of any exception raised on the request path."""
    if isinstance(error, WorkflowError):
        return error.category
    if isinstance(error, (EngineTimeout, StoreTimeout, asyncio.TimeoutError, TimeoutError)):
        return Category.TIMEOUT
    if isinstance(error, (EngineError, StoreError, ConnectionError)):
        return Category.DEPENDENCY
    return Category.INTERNAL


@dataclass(frozen=True)
class Failure:
    """What a fail-open step left behind instead of its output."""

    step: str
    category: Category
    message: str

    @classmethod
    def of(cls, step: str, error: BaseException) -> Failure:
        return cls(step=step, category=classify(error), message=str(error) or type(error).__name__)

    @property
    def reason(self) -> str:
        """Short reason for `degraded_reasons`, e.g. 'source_jobs: timeout'."""
        return f"{self.step}: {self.category.value}"
