"""`quasar index build|list` through click's runner, on a real embedded store in a temporary directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from kvstore.ann import AnnIndex, exact_search
from kvstore.embedded import set_current, write_version
from quasar.cli_index import index


def run(*args: str) -> Result:
    # catch_exceptions=False: anything but a clean exit (a traceback for the operator) fails the test.
    return CliRunner().invoke(index, list(args), catch_exceptions=False)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((800, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    root = tmp_path / "store"
    write_version(root, "item", np.arange(100, 900), vectors, version="v1")
    set_current(root, "item", write_version(root, "item", np.arange(100, 900), -vectors, version="v2"))
    return root


def test_build_indexes_the_current_version_beside_the_store(store: Path) -> None:
    # One build thread: a graph built by several is not the same from run to run, and the check below
    # compares its answers with exact search exactly.
    result = run("build", "--store-root", str(store), "--table", "item", "--threads", "1")

    assert result.exit_code == 0, result.output
    assert "item@v2: read 800 rows x 8" in result.output
    assert "recall@100 " in result.output
    directory = store.parent / "indexes" / "item" / "v2"
    assert f"saved {directory}" in result.output
    meta = json.loads((directory / "meta.json").read_text())
    assert (meta["table"], meta["table_version"], meta["count"], meta["metric"]) == ("item", "v2", 800, "ip")
    assert f"recall@100 {meta['recall']['value']:.4f}" in result.output
    # The artifact answers like exact search over the version it names (v2 holds the negated vectors).
    vectors = -np.load(store / "item" / "versions" / "v1" / "vectors.npy")
    query = vectors[:1]
    expected = exact_search(np.arange(100, 900), vectors, query, 5).ids
    np.testing.assert_array_equal(AnnIndex.load(directory).search(query, 5).ids, expected)


def test_build_a_named_version_with_options_then_list(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    args = ("--store-root", str(store), "--table", "item", "--out", str(out))
    built = run("build", *args, "--version", "v1", "--metric", "cos", "--connectivity", "8", "--recall-queries", "50")
    assert built.exit_code == 0, built.output
    assert "cos, M=8" in built.output
    assert run("build", *args).exit_code == 0  # the current version, v2

    listed = run("list", "--index-root", str(out))
    assert listed.exit_code == 0, listed.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in listed.output.splitlines() if "│ item" in line]
    assert [row[:5] for row in rows] == [["item", "v1", "cos", "8", "800"], ["item", "v2", "ip", "8", "800"]]
    assert all(re.fullmatch(r"@100 [01]\.\d{4}", row[5]) and row[-1] == "complete" for row in rows)


def test_list_shows_a_damaged_index_without_hiding_the_others(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    for version in ("v1", "v2"):
        run("build", "--store-root", str(store), "--table", "item", "--version", version, "--out", str(out))
    (out / "item" / "v1" / "meta.json").write_text("{not json")

    listed = run("list", "--index-root", str(out))
    assert listed.exit_code == 0, listed.output
    assert "unreadable" in listed.output
    assert "complete" in listed.output


def test_rebuilding_an_existing_index_fails_cleanly(store: Path) -> None:
    assert run("build", "--store-root", str(store), "--table", "item").exit_code == 0
    again = run("build", "--store-root", str(store), "--table", "item")
    assert again.exit_code == 1
    assert "already exists; indexes are immutable: delete it to rebuild" in again.output
    assert "Traceback" not in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--table", "member"), "table 'member' has no current version"),
        (("--table", "item", "--version", "v7"), "no version 'v7'"),
        (("--table", "../item"), "table name '../item' must match"),
    ],
)
def test_bad_tables_and_versions_exit_1_with_a_message(store: Path, args: tuple[str, ...], message: str) -> None:
    result = run("build", "--store-root", str(store), *args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
