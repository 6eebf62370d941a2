"""Errors of feature declarations, model signatures and their checks against the running system."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import ValidationError


class DeclarationError(ValueError):
    """A declaration that cannot serve. `str()` gives one line per problem: `<file>: <key path>: <message>`."""

    def __init__(self, source: str, issues: list[tuple[str, str]]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(
            "\n".join(f"{source}: {path}: {message}" if path else f"{source}: {message}" for path, message in issues)
        )


def nearest(name: str, known: Iterable[str], *, n: int = 3) -> str:
    """' (nearest: a, b)' naming the closest known names, or '' when none is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=n, cutoff=0.5)
    return f" (nearest: {', '.join(close)})" if close else ""


def key_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a YAML key path: ('views', 2, 'features', 0, 'shape') ->
    views[2].features[0].shape."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def from_validation(source: str, error: ValidationError, prefix: str = "") -> DeclarationError:
    issues = []
    for detail in error.errors():
        loc = tuple(p for p in detail["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = key_path(loc)
        issues.append((f"{prefix}.{path}" if prefix and path else prefix or path, detail["msg"]))
    return DeclarationError(source, issues)
