"""The world's declared feature views are checked against its store when the gateway starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from features import DeclarationError
from gateway.app import FeedApp
from quasar.cli import main
from tests.integration.conftest import make_settings


def _world_copy(small_world: Path, tmp_path: Path, edit: str | None = None) -> Path:
    """The small world by symlinks, with its own copy of the declarations (optionally edited)."""
    world = tmp_path / "world"
    world.mkdir()
    for entry in small_world.iterdir():
        if entry.name != "features":
            (world / entry.name).symlink_to(entry)
    (world / "features").mkdir()
    text = (small_world / "features" / "feed.yaml").read_text()
    if edit is not None:
        document = yaml.safe_load(text)
        for view in document["views"]:
            if view["name"] == "item_embedding":
                if edit == "width":
                    view["features"][0]["shape"] = [view["features"][0]["shape"][0] + 1]
                elif edit == "table":
                    view["table"] = "item_vectors"
                elif edit == "dtype":
                    view["dtype"] = "int64"
        text = yaml.safe_dump(document, sort_keys=False)
    (world / "features" / "feed.yaml").write_text(text)
    return world


async def test_the_built_world_declares_its_tables_and_starts(small_world: Path, tmp_path: Path) -> None:
    app = FeedApp(make_settings(_world_copy(small_world, tmp_path)))
    await app.start()
    try:
        assert await app.ready()
    finally:
        await app.close()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            "width",
            r"feed\.yaml: views\[1\]\.features: view 'item_embedding' declares \d+ values per row, table 'item'@",
        ),
        (
            "table",
            r"feed\.yaml: views\[1\]\.table: view 'item_embedding': store 'embedded' has no table 'item_vectors'",
        ),
        (
            "dtype",
            r"feed\.yaml: views\[1\]\.dtype: view 'item_embedding' declares int64, table 'item'@\S+ holds float32",
        ),
    ],
)
async def test_a_declaration_the_store_does_not_match_fails_startup(
    small_world: Path, tmp_path: Path, edit: str, expected: str
) -> None:
    app = FeedApp(make_settings(_world_copy(small_world, tmp_path, edit)))
    try:
        with pytest.raises(DeclarationError, match=expected):
            await app.start()
    finally:
        await app.close()


def test_features_search_finds_the_worlds_embeddings_by_tag(small_world: Path) -> None:
    result = CliRunner().invoke(
        main, ["features", "search", "--features-dir", str(small_world / "features"), "--tag", "embedding"]
    )
    assert result.exit_code == 0, result.output
    for name in ("member_embedding.vector", "item_embedding.vector", "author_embedding.vector"):
        assert name in result.stdout
    assert "member_profile.activity" not in result.stdout
