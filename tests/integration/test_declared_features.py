"""A world's declarations are checked against its store and engines when the gateway starts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from features import DeclarationError
from gateway.app import FeedApp
from quasar.cli import main
from tests.integration.conftest import make_settings


def _world_copy(small_world: Path, tmp_path: Path) -> Path:
    """The small world by symlinks, with its own copies of the declarations (features, signatures)."""
    world = tmp_path / "world"
    world.mkdir()
    for entry in small_world.iterdir():
        if entry.name not in ("features", "models"):
            (world / entry.name).symlink_to(entry)
    shutil.copytree(small_world / "features", world / "features")
    (world / "models").mkdir()
    for entry in (small_world / "models").iterdir():
        if entry.name.endswith(".signature.yaml"):
            shutil.copy(entry, world / "models" / entry.name)
        else:
            (world / "models" / entry.name).symlink_to(entry)
    return world


def _edit(path: Path, change: Any) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _view(name: str, edit: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        (view,) = [v for v in document["views"] if v["name"] == name]
        edit(view)

    return change


async def _start_fails(world: Path) -> str:
    app = FeedApp(make_settings(world))
    try:
        with pytest.raises(DeclarationError) as caught:
            await app.start()
    finally:
        await app.close()
    return str(caught.value)


async def test_the_built_world_starts(small_world: Path, tmp_path: Path) -> None:
    app = FeedApp(make_settings(_world_copy(small_world, tmp_path)))
    await app.start()
    try:
        assert await app.ready()
    finally:
        await app.close()


@pytest.mark.parametrize(
    ("view", "edit", "expected"),
    [
        (
            "item_embedding",
            lambda v: v["features"][0].update(shape=[v["features"][0]["shape"][0] + 1]),
            r"feed\.yaml: views\[\d+\]\.features: view 'item_embedding' declares \d+ values per row, "
            r"table 'item'@\S+ holds \d+",
        ),
        (
            "trending",  # the trending source's table
            lambda v: v.update(table="trending_lists"),
            r"feed\.yaml: views\[\d+\]\.table: view 'trending': store 'embedded' has no table 'trending_lists'",
        ),
        (
            "job_topics",
            lambda v: v.update(dtype="int64"),
            r"feed\.yaml: views\[\d+\]\.dtype: view 'job_topics' declares int64, table 'job_topics'@\S+ holds float32",
        ),
        (
            "item_embedding",  # a dtype a signature reads as floats: refused by the signature first
            lambda v: v.update(dtype="int64"),
            r"feed_ranker\.signature\.yaml: inputs\[0\]\.features\[1\]: 'item_embedding\.vector' is an id feature; "
            r"tensor 'features' is float32",
        ),
    ],
)
async def test_a_view_the_store_does_not_match_fails_startup(
    small_world: Path, tmp_path: Path, view: str, edit: Any, expected: str
) -> None:
    world = _world_copy(small_world, tmp_path)
    _edit(world / "features" / "feed.yaml", _view(view, edit))
    message = await _start_fails(world)
    assert re.search(expected, message), message


async def test_an_unknown_feature_in_a_signature_fails_startup_naming_the_nearest(
    small_world: Path, tmp_path: Path
) -> None:
    world = _world_copy(small_world, tmp_path)
    _edit(
        world / "models" / "first_pass.signature.yaml",
        lambda d: d["inputs"][0]["features"].__setitem__(1, "item_age_dayz"),
    )
    message = await _start_fails(world)
    assert "first_pass.signature.yaml: inputs[0].features[1]: unknown feature 'item_age_dayz'" in message
    assert "nearest: item_age_days" in message


async def test_a_signature_narrower_than_its_engine_fails_startup_naming_both(
    small_world: Path, tmp_path: Path
) -> None:
    world = _world_copy(small_world, tmp_path)
    _edit(world / "models" / "feed_ranker.signature.yaml", lambda d: d["inputs"][0]["features"].pop())
    message = await _start_fails(world)
    assert "feed_ranker.signature.yaml: inputs[0].features: model 'feed_ranker' input 'features' declares" in message
    assert "engine route feed_ranker takes" in message


def test_features_search_finds_the_worlds_embeddings_by_tag(small_world: Path) -> None:
    result = CliRunner().invoke(
        main, ["features", "search", "--features-dir", str(small_world / "features"), "--tag", "embedding"]
    )
    assert result.exit_code == 0, result.output
    for name in ("member_embedding.vector", "item_embedding.vector", "author_embedding.vector", "hashtags_pooled"):
        assert name in result.stdout
    assert "member_profile.activity" not in result.stdout
