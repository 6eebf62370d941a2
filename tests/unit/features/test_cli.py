from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from quasar.cli import main
from tests.unit.features.product import FEATURES_YAML, write_product


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_search_finds_a_feature_by_tag(tmp_path: Path) -> None:
    directory = str(write_product(tmp_path) / "features")
    code, out, _ = run("features", "search", "--features-dir", directory, "--tag", "embedding")
    assert code == 0
    assert "author_embedding.vector" in out
    assert "hashtag_embedding.vector" in out
    assert "item_stats.popularity" not in out


def test_search_by_text_entity_and_owner(tmp_path: Path) -> None:
    directory = str(write_product(tmp_path) / "features")
    code, out, _ = run("features", "search", "activity", "--features-dir", directory, "--owner", "feed-ml")
    assert code == 0
    assert "member_profile.activity" in out
    code, out, _ = run("features", "search", "--features-dir", directory, "--entity", "derived")
    assert "item_log_popularity" in out
    assert "│ item_meta.author_id" not in out  # stored features are not derived (inputs may name them)
    code, _, err = run("features", "search", "nothing-like-this", "--features-dir", directory)
    assert code == 1
    assert "no feature matches" in err


def test_list_and_show(tmp_path: Path) -> None:
    directory = str(write_product(tmp_path) / "features")
    code, out, _ = run("features", "list", "--features-dir", directory)
    assert code == 0
    assert "15 features" in out
    code, out, _ = run("features", "show", "item_meta", "--features-dir", directory)
    assert "item_meta.created_at_s" in out
    code, _, err = run("features", "show", "item_meta.creatd_at_s", "--features-dir", directory)
    assert code == 2
    assert "nearest: item_meta.created_at_s" in err


def test_bad_declarations_print_one_line_per_problem_and_exit_2(tmp_path: Path) -> None:
    write_product(
        tmp_path, FEATURES_YAML.replace("entity: item\n    table: item_stats", "entity: itme\n    table: item_stats")
    )
    code, _, err = run("features", "list", "--features-dir", str(tmp_path / "features"))
    assert code == 2
    assert err.startswith("error: ")
    assert "views[3].entity: unknown entity 'itme'" in err
    assert "Traceback" not in err
