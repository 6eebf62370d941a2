"""YAML workflows (the declarative DSL) -> validated `Workflow` values, at startup.

```yaml
workflow: feed                  # the workflow's name
version: "2026.11.1"            # a string: quote it
timeout_s: 0.3                  # request budget when the caller sets none (optional)
description: ...                # optional
steps:                          # the root sequence, named after the workflow
  - type: rewrite               # a registered step type; keys other than the reserved ones are its params
  - type: features
    timeout_s: 0.05
  - parallel:
      name: sources
      branches:
        - {type: source.network, name: network, timeout_s: 0.08, fail_open: true, limit: 400}
        - {type: source.jobs, name: jobs, timeout_s: 0.08, fail_open: true}
  - type: rank
    timeout_s: 0.1
    fallback: {type: rank.first_pass_order}
  - switch:
      name: blend_by_bucket
      on: slot.experiment_bucket  # or request.context.<key>, or request.<field>
      cases:
        a: {type: blend, max_per_author: 2}
      default: {type: blend}
  - sequence: {name: tail, steps: [...]}
```

A node is exactly one of: a step (`type`), `parallel`, `switch`, `sequence`. Reserved keys of a step node:
type, name (defaults to the type), timeout_s, fail_open, fallback (a node). A composite takes name
(required), timeout_s, fail_open and fallback inside its own mapping. Every error, YAML syntax included,
is a `WorkflowConfigError` naming the file, the key path (`steps[2].parallel.branches[1].limit`) and
what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from remix._yaml import strict_load
from remix.compose import Parallel, Sequence, Switch
from remix.graph import WorkflowBuildError
from remix.keys import Key
from remix.policy import Policy
from remix.registry import StepRegistry
from remix.selectors import REQUEST_FIELDS, ContextSelector, RequestSelector, Selector, SlotSelector
from remix.step import Step
from remix.workflow import Workflow
from remix.wrappers import guard

RESERVED_KEYS = ("type", "name", "timeout_s", "fail_open", "fallback")
"""Keys of a step node that configure how it runs; every other key is a parameter of its type."""

_COMPOSITES = ("parallel", "switch", "sequence")
_NODE_KINDS = ("type", *_COMPOSITES)


class WorkflowConfigError(ValueError):
    """A workflow file that cannot be loaded. `issues` lists (key path, what was expected) pairs.

    `str()` gives one line per issue: `<file>: <key path>: <message>`.
    """

    def __init__(self, source: str, issues: list[tuple[str, str]]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(
            "\n".join(f"{source}: {path}: {message}" if path else f"{source}: {message}" for path, message in issues)
        )

    @property
    def path(self) -> str:
        return self.issues[0][0]

    @property
    def message(self) -> str:
        return self.issues[0][1]


# --- structure of the DSL ---------------------------------------------------------------------------------

_Name = Annotated[str, Field(min_length=1)]
_Timeout = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Model(BaseModel):
    # Strict: a YAML typo such as `fail_open: "no"` or `version: 1.10` must not be coerced.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Document(_Model):
    workflow: _Name
    version: _Name
    timeout_s: _Timeout | None = None
    description: str = ""
    steps: Annotated[list[Any], Field(min_length=1)]


class _PolicyKeys(_Model):
    timeout_s: _Timeout | None = None
    fail_open: bool = False
    fallback: Any = None  # a node, built recursively so its errors carry their own path


class _StepNode(_PolicyKeys):
    type: _Name
    name: _Name | None = None


class _SequenceBody(_PolicyKeys):
    name: _Name
    steps: Annotated[list[Any], Field(min_length=1)]


class _ParallelBody(_PolicyKeys):
    name: _Name
    branches: Annotated[list[Any], Field(min_length=1)]


class _SwitchBody(_PolicyKeys):
    name: _Name
    on: _Name
    cases: Annotated[dict[str, Any], Field(min_length=1)]
    default: Any = None


M = TypeVar("M", bound=BaseModel)


# --- loading ----------------------------------------------------------------------------------------------


def load_workflow(path: Path, registry: StepRegistry, services: Any, *, answer: Key[Any] | None = None) -> Workflow:
    """Load and validate one workflow file; raises `WorkflowConfigError` (also when `answer`, the key the
    caller answers from, is given and no step writes it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise WorkflowConfigError(str(path), [("", f"cannot read the file: {error}")]) from error
    return parse_workflow(text, str(path), registry, services, answer=answer)


def load_workflows(
    directory: Path, registry: StepRegistry, services: Any, *, answer: Key[Any] | None = None
) -> dict[str, Workflow]:
    """Every `*.yaml` in `directory` (not recursive), by workflow name; two files naming the same
    workflow are an error. An empty directory gives an empty dict: whether that is fatal is the caller's
    call."""
    if not directory.is_dir():
        raise WorkflowConfigError(str(directory), [("", "not a directory of workflow files")])
    workflows: dict[str, Workflow] = {}
    sources: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        workflow = load_workflow(path, registry, services, answer=answer)
        if workflow.name in workflows:
            message = f"workflow {workflow.name!r} is also defined in {sources[workflow.name]}"
            raise WorkflowConfigError(str(path), [("workflow", message)])
        workflows[workflow.name] = workflow
        sources[workflow.name] = path
    return workflows


def parse_workflow(
    text: str, source_name: str, registry: StepRegistry, services: Any, *, answer: Key[Any] | None = None
) -> Workflow:
    """Build a workflow from YAML `text`; `source_name` (usually the file path) prefixes every error.
    With `answer`, a workflow that never writes that key (the caller's answer) is an error too."""
    try:
        data = strict_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"
        problem = " ".join(part for part in (error.context, error.problem) if part)
        raise WorkflowConfigError(source_name, [(where, f"invalid YAML: {problem}")]) from error
    except yaml.YAMLError as error:
        raise WorkflowConfigError(source_name, [("", f"invalid YAML: {error}")]) from error
    workflow = _Builder(source_name, registry, services).workflow(data)
    if answer is not None and answer.name not in {key.name for key in workflow.root.writes}:
        message = f"workflow {workflow.name!r} never writes {answer.name!r}, the answer; end it with a step that does"
        raise WorkflowConfigError(source_name, [("steps", message)])
    return workflow


# --- building ---------------------------------------------------------------------------------------------


class _Builder:
    """Walks the document in order, building guarded steps and remembering where each one was declared."""

    def __init__(self, source: str, registry: StepRegistry, services: Any) -> None:
        self._source = source
        self._registry = registry
        self._services = services
        self._paths: dict[str, str] = {}  # step name -> key path of its latest node, for graph errors
        self._written: dict[str, Key[Any]] = {}  # slots written by the nodes built so far, for `slot.` selectors

    def workflow(self, data: Any) -> Workflow:
        if not isinstance(data, dict):
            expected = "a mapping with the keys workflow, version, steps (timeout_s, description optional)"
            raise self._error("", f"expected {expected}, got {_show(data)}")
        doc = self._validate(_Document, data, "")
        steps = [self._node(node, f"steps[{index}]") for index, node in enumerate(doc.steps)]
        try:
            return Workflow(
                name=doc.workflow,
                version=doc.version,
                root=Sequence(doc.workflow, steps),
                default_timeout_s=doc.timeout_s,
                description=doc.description,
            )
        except WorkflowBuildError as error:
            path = self._paths.get(error.step, "steps") if error.step else "steps"
            raise self._error(path, str(error)) from error

    def _node(self, data: Any, path: str) -> Step:
        if not isinstance(data, dict):
            raise self._error(
                path, f"expected a step: a mapping with `type` or one of {_COMPOSITES_TEXT}, got {_show(data)}"
            )
        kinds = [kind for kind in _NODE_KINDS if kind in data]
        if len(kinds) != 1:
            found = f"found {', '.join(kinds)}" if kinds else f"found keys {', '.join(map(str, data))}"
            raise self._error(path, f"a node has exactly one of `type`, {_COMPOSITES_TEXT} ({found})")
        kind = kinds[0]
        if kind == "type":
            step, policy = self._step(data, path)
        else:
            extra = sorted(str(key) for key in data if key != kind)
            if extra:
                message = (
                    f"unknown key next to `{kind}`; a {kind}'s name, timeout_s, fail_open and fallback go inside it"
                )
                raise self._error(_join(path, extra[0]), message)
            step, policy = self._composite(kind, data[kind], _join(path, kind))
        # The latest node: a duplicate name or a second producer is reported where it is repeated.
        self._paths[step.name] = path
        guarded = guard(step, policy)
        self._written.update((key.name, key) for key in guarded.writes)
        return guarded

    def _step(self, data: dict[Any, Any], path: str) -> tuple[Step, Policy]:
        reserved = {key: value for key, value in data.items() if key in RESERVED_KEYS}
        params = {key: value for key, value in data.items() if key not in RESERVED_KEYS}
        node = self._validate(_StepNode, reserved, path)
        try:
            step_type = self._registry.get(node.type)
        except KeyError:
            known = ", ".join(self._registry.names()) or "none registered"
            raise self._error(
                _join(path, "type"), f"unknown step type {node.type!r}; expected one of: {known}"
            ) from None
        model = self._validate(step_type.params, params, path, also_allowed=RESERVED_KEYS)
        name = node.name or node.type
        try:
            step = step_type.build(name, model, self._services)
        except Exception as error:
            raise self._error(path, f"cannot build step {name!r} of type {node.type!r}: {error}") from error
        return step, self._policy(node, path)

    def _composite(self, kind: str, data: Any, path: str) -> tuple[Step, Policy]:
        if kind == "sequence":
            seq = self._validate(_SequenceBody, data, path)
            steps = [self._node(node, f"{path}.steps[{index}]") for index, node in enumerate(seq.steps)]
            return Sequence(seq.name, steps), self._policy(seq, path)
        if kind == "parallel":
            par = self._validate(_ParallelBody, data, path)
            branches = [self._node(node, f"{path}.branches[{index}]") for index, node in enumerate(par.branches)]
            return Parallel(par.name, branches), self._policy(par, path)
        switch = self._validate(_SwitchBody, data, path)
        selector = self._selector(switch.on, _join(path, "on"))
        cases = {value: self._node(node, _join(f"{path}.cases", value)) for value, node in switch.cases.items()}
        default = None if switch.default is None else self._node(switch.default, _join(path, "default"))
        return Switch(switch.name, selector, cases, default), self._policy(switch, path)

    def _policy(self, keys: _PolicyKeys, path: str) -> Policy:
        fallback = None if keys.fallback is None else self._node(keys.fallback, _join(path, "fallback"))
        return Policy(timeout_s=keys.timeout_s, fail_open=keys.fail_open, fallback=fallback)

    def _selector(self, on: str, path: str) -> Selector:
        if on.startswith("slot."):
            key = self._written.get(on.removeprefix("slot."))
            if key is None:
                written = ", ".join(sorted(self._written)) or "none"
                raise self._error(path, f"no earlier step writes {on!r} (slots written so far: {written})")
            return SlotSelector(key)
        if on.startswith("request.context."):
            return ContextSelector(on.removeprefix("request.context."))
        if on.startswith("request.") and on.removeprefix("request.") in REQUEST_FIELDS:
            return RequestSelector(on.removeprefix("request."))
        fields = ", ".join(f"request.{field}" for field in sorted(REQUEST_FIELDS))
        raise self._error(
            path, f"cannot switch on {on!r}; expected slot.<key>, request.context.<key> or one of {fields}"
        )

    def _validate(self, model: type[M], data: Any, path: str, also_allowed: tuple[str, ...] = ()) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as error:
            allowed = [*model.model_fields, *also_allowed]
            issues = [_issue(path, detail, allowed) for detail in error.errors(include_url=False)]
            raise WorkflowConfigError(self._source, issues) from error

    def _error(self, path: str, message: str) -> WorkflowConfigError:
        return WorkflowConfigError(self._source, [(path, message)])


_COMPOSITES_TEXT = ", ".join(f"`{kind}`" for kind in _COMPOSITES)


def _issue(path: str, detail: Mapping[str, Any], allowed: list[str]) -> tuple[str, str]:
    """One pydantic error as (key path, message), with the offending value when it is short."""
    loc = tuple(detail["loc"])
    where = path
    for index, part in enumerate(loc):
        if part == "[key]":
            continue  # pydantic's marker after a bad mapping key: the key itself is the previous part
        is_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
        where = f"{where}[{part}]" if isinstance(part, int) and not is_key else _join(where, str(part))
    kind = detail["type"]
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return where, f"unknown key; expected one of: {', '.join(allowed)}"
        return where, "unknown key"
    if kind == "model_type" or kind == "dict_type":
        return where, f"expected a mapping, got {_show(detail['input'])}"
    message = str(detail["msg"])
    if kind != "missing":
        message += f" (got {_show(detail['input'])})"
    return where, message


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def _join(path: str, key: str) -> str:
    # A key a user typed may hold anything (line breaks included): quote it so an error stays one line.
    shown = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
