"""Configuration problems as one line each: `<file>: <key path>: <message>`, never a traceback.

Every YAML a user writes (the settings file, workflow files, route tables) is checked at startup (or,
for routes, when they are sent); what is wrong is reported by file and key path so the fix is obvious
from one line, and nothing in the message names a Python class or an internal module.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import yaml
from pydantic import ValidationError

from gateway.settings import GatewaySettings, load_settings
from remix.dsl import WorkflowConfigError

EXIT_CONFIG = 2  # as click's usage errors: the invocation, not the program, is wrong
_NOT_IN_FILE = "QUASAR_* environment or command-line options"  # settings the file does not set came from here
_PLAIN_KEY = re.compile(r"[\w-]+")
_CLASS_REPR = re.compile(r"\s*(?:for |of )?<class '[\w.]+'>")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one source (a file path, `settings`, `routes`); `path` may be empty."""

    source: str
    path: str
    message: str

    def line(self) -> str:
        """One line, whatever the message held (some parsers put the position on a line of its own)."""
        message = _one_line(self.message)
        return f"{self.source}: {self.path}: {message}" if self.path else f"{self.source}: {message}"


class ConfigProblems(Exception):
    """A configuration that cannot be used: one `Problem` per thing wrong, `lines()` one line each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("ConfigProblems needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    @classmethod
    def of(cls, source: str, issues: Sequence[tuple[str, str]]) -> ConfigProblems:
        """Problems of one source from (key path, message) pairs."""
        return cls([Problem(source, path, message) for path, message in issues])

    def lines(self) -> list[str]:
        return [problem.line() for problem in self.problems]


def validation_issues(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """One (key path, message) per pydantic error; paths read `engines.routes.first_pass.targets[0].engine`."""
    return [_issue(detail, prefix) for detail in error.errors(include_url=False)]


def yaml_issue(error: yaml.YAMLError) -> tuple[str, str]:
    """A YAML syntax error as (`line L, column C` or "" when unknown, what the parser found wrong)."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"
        problem = " ".join(part for part in (error.context, error.problem) if part)
        return where, _one_line(problem)
    return "", _one_line(str(error))


def load_mapping(text: str, source: str, *, what: str) -> dict[str, Any]:
    """Parse YAML (or JSON) `text` that must be a mapping with string keys (empty text: an empty mapping).
    Raises `ConfigProblems` naming `source` for bad syntax, a non-mapping document or non-string keys."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where, problem = yaml_issue(error)
        raise ConfigProblems.of(source, [(where, f"invalid YAML: {problem}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigProblems.of(source, [("", f"{what} must be a mapping of keys to values, got {_kind(data)}")])
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ConfigProblems.of(source, [(repr(key), "keys must be strings") for key in bad_keys])
    return data


def load_settings_checked(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """`load_settings`, with every problem raised as `ConfigProblems`: the file's syntax and shape first,
    then each invalid key. Problems with keys the file does not set (QUASAR_* variables, overrides) are
    reported under the source `QUASAR_* environment or command-line options`."""
    source = str(config_file) if config_file is not None else "settings"
    in_file: Mapping[str, Any] = {}
    if config_file is not None:
        try:
            text = config_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigProblems.of(source, [("", "no such file")]) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigProblems.of(source, [("", f"cannot read the file: {_one_line(str(error))}")]) from None
        in_file = load_mapping(text, source, what="a settings file")
    try:
        return load_settings(config_file, **overrides)
    except ValidationError as error:
        problems = []
        for detail in error.errors(include_url=False):
            loc = detail["loc"]
            where = source if not loc or loc[0] in in_file else _NOT_IN_FILE
            path, message = _issue(detail, "")
            if detail["type"] == "extra_forbidden" and len(loc) == 1:
                message += _did_you_mean(str(loc[0]), GatewaySettings.model_fields)
            problems.append(Problem(where, path, message))
        raise ConfigProblems(problems) from None


def problem_lines(error: BaseException) -> list[str] | None:
    """The one-line-per-problem report of a configuration error, or None when `error` is not one."""
    if isinstance(error, ConfigProblems):
        return error.lines()
    if isinstance(error, WorkflowConfigError):
        return ConfigProblems.of(error.source, error.issues).lines()
    if isinstance(error, ValidationError):
        return ConfigProblems.of("settings", validation_issues(error)).lines()
    if isinstance(error, FileNotFoundError):  # a configured path (world, models, workflows) that is not there
        return [_one_line(str(error))]
    return None


@contextmanager
def exit_on_config_problems(stream: TextIO | None = None) -> Iterator[None]:
    """Turn a configuration error raised inside into `error: <line>` lines on stderr and exit status 2.

    Any other exception passes through untouched: only problems a user can fix in a file are reported
    this way; a bug still fails loudly with its traceback."""
    try:
        yield
    except Exception as error:
        lines = problem_lines(error)
        if lines is None:
            raise
        _exit(lines, stream or sys.stderr)


def _exit(lines: list[str], stream: TextIO) -> NoReturn:
    for line in lines:
        print(f"error: {_one_line(line)}", file=stream, flush=True)
    raise SystemExit(EXIT_CONFIG)


def _issue(detail: Mapping[str, Any], prefix: str) -> tuple[str, str]:
    loc = tuple(detail["loc"])
    where = prefix
    for index, part in enumerate(loc):
        if part == "[key]":
            continue  # pydantic's marker after a bad mapping key: the key itself is the previous part
        is_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
        if isinstance(part, int) and not is_key:
            where = f"{where}[{part}]"
        else:
            where = f"{where}.{_key(part)}" if where else _key(part)
    kind = detail["type"]
    if kind == "extra_forbidden":
        return where, "unknown key (Extra inputs are not permitted)"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return where, f"expected a mapping, got {_kind(detail.get('input'))}"
    message = _CLASS_REPR.sub("", str(detail["msg"]))
    if kind not in ("missing",) and "input" in detail:
        message += f" (got {_show(detail['input'])})"
    return where, _one_line(message)


def _key(part: Any) -> str:
    """A key as a path element: plain names as they are, anything else (spaces, line breaks, dots) quoted."""
    text = str(part)
    return text if _PLAIN_KEY.fullmatch(text) else repr(text)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a value of another kind"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return _kind(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
