"""ReMix: composable ranking workflows run under one request deadline.

Steps are async units that read and write typed keys of a per-request `Context`; workflows compose them
(sequence, parallel, switch, fallback) in Python or YAML, are validated when built, and run with
`run_workflow`, which derives every step's limit from the request's single deadline and records a trace.
"""

from remix.budget import Budget, Clock
from remix.compose import Fallback, Parallel, Sequence, Switch
from remix.context import Context
from remix.dsl import WorkflowConfigError, load_workflow, load_workflows, parse_workflow
from remix.executor import execute, new_context, run_workflow
from remix.failures import Category, DependencyFailure, Failure, InvalidRequest, StepTimeout, WorkflowError
from remix.graph import WorkflowBuildError
from remix.keys import Key
from remix.policy import Policy
from remix.registry import StepParams, StepRegistry, StepType
from remix.request import FeedRequest
from remix.selectors import ContextSelector, RequestSelector, Selector, SlotSelector
from remix.step import Step
from remix.trace import Outcome, Trace, TraceEntry
from remix.workflow import Workflow
from remix.wrappers import guard

__all__ = [
    "Budget",
    "Category",
    "Clock",
    "Context",
    "ContextSelector",
    "DependencyFailure",
    "Failure",
    "Fallback",
    "FeedRequest",
    "InvalidRequest",
    "Key",
    "Outcome",
    "Parallel",
    "Policy",
    "RequestSelector",
    "Selector",
    "Sequence",
    "SlotSelector",
    "Step",
    "StepParams",
    "StepRegistry",
    "StepTimeout",
    "StepType",
    "Switch",
    "Trace",
    "TraceEntry",
    "Workflow",
    "WorkflowBuildError",
    "WorkflowConfigError",
    "WorkflowError",
    "execute",
    "guard",
    "load_workflow",
    "load_workflows",
    "new_context",
    "parse_workflow",
    "run_workflow",
]
