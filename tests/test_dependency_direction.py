"""The package boundaries DESIGN.md draws, checked on the source: what each package may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVING = ("gateway", "remix", "engines", "kvstore", "features", "health")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str, *, exclude: str | None = None) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py")) if exclude is None or exclude not in p.parts]


@pytest.mark.parametrize("package", SERVING)
def test_the_serving_path_knows_no_demo(package: str) -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith("quasar.demo"))
        for p in _modules(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_workflow_engine_imports_neither_the_ranking_library_nor_grpc_nor_features() -> None:
    forbidden = ("remix.steps", "features", "grpc", "engines", "kvstore")
    offenders = {
        str(p.relative_to(ROOT)): sorted(
            m for m in _imports(p) if m.split(".")[0] in {"grpc", "features"} or m.startswith(forbidden)
        )
        for p in _modules("remix", exclude="steps")
    }
    # remix/failures.py classifies engine and store errors (their protocols' errors): the one allowed exception
    allowed = {"remix/failures.py": ["engines.errors", "kvstore.errors"]}
    assert {k: v for k, v in offenders.items() if v and allowed.get(k) != v} == {}


def test_the_ranking_library_imports_no_grpc() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "grpc") for p in _modules("remix")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
