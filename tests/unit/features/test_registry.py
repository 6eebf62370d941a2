from __future__ import annotations

from pathlib import Path

import pytest

from features import DeclarationError, load_registry, load_signatures
from features.registry import DerivedFeature, ViewFeature
from tests.unit.features.product import FEATURES_YAML, SIGNATURE_YAML, write_product


def test_registry_resolves_stored_derived_and_builtin_features(tmp_path: Path) -> None:
    registry = load_registry(write_product(tmp_path) / "features")
    popularity = registry.feature("item_stats.popularity")
    assert isinstance(popularity, ViewFeature)
    assert (popularity.start, popularity.width) == (0, 1)
    topics = registry.feature("item_stats.topics")
    assert isinstance(topics, ViewFeature)
    assert (topics.start, topics.width) == (1, 2)
    pooled = registry.feature("hashtags_pooled")
    assert isinstance(pooled, DerivedFeature)
    assert pooled.width == 2
    assert registry.feature("author.id").is_ids
    assert registry.feature("candidate.first_pass_score").name == "candidate.first_pass_score"
    with pytest.raises(KeyError, match=r"hashtag\.id"):
        registry.feature("hashtag.id")  # keyed by nothing: it has no id of its own in a row


def test_each_table_is_mapped_to_the_store_its_views_declare(tmp_path: Path) -> None:
    features_yaml = FEATURES_YAML.replace("    table: item_stats\n", "    table: item_stats\n    store: redis\n")
    registry = load_registry(write_product(tmp_path, features_yaml=features_yaml) / "features")
    assert registry.table_stores["item_stats"] == "redis"
    assert registry.table_stores["item_meta"] == "default"
    assert set(registry.table_stores) == {view.table for view in registry.views.values()}


def test_unknown_feature_names_the_nearest(tmp_path: Path) -> None:
    registry = load_registry(write_product(tmp_path) / "features")
    with pytest.raises(KeyError, match=r"item_stats\.popularty.*nearest: item_stats\.popularity"):
        registry.feature("item_stats.popularty")


def test_signature_with_unknown_feature_fails_with_file_key_path_and_nearest(tmp_path: Path) -> None:
    write_product(tmp_path, signature_yaml=SIGNATURE_YAML.replace("item_log_popularity", "item_log_popularty"))
    registry = load_registry(tmp_path / "features")
    with pytest.raises(DeclarationError) as caught:
        load_signatures(tmp_path / "models", registry)
    message = str(caught.value)
    assert "ranker.signature.yaml: inputs[0].features[1]: unknown feature 'item_log_popularty'" in message
    assert "nearest: item_log_popularity" in message


def test_signature_width_counts_every_feature(tmp_path: Path) -> None:
    write_product(tmp_path)
    registry = load_registry(tmp_path / "features")
    signature = load_signatures(tmp_path / "models", registry)["ranker"]
    # activity 1, log pop 1, age 1, similarity 1, connection 1, author vector 2, pooled 2, first pass 1
    assert signature.inputs[0].width == 10
    assert signature.heads == ("click", "share")


def test_feature_declared_with_a_wrong_dtype_is_refused(tmp_path: Path) -> None:
    write_product(tmp_path, FEATURES_YAML.replace("table: item_stats\n", "table: item_stats\n    dtype: float64\n"))
    with pytest.raises(DeclarationError, match=r"product\.yaml: views\[3\]\.dtype: .*float64"):
        load_registry(tmp_path / "features")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("entity: item\n    table: item_stats", "entity: itme\n    table: item_stats"),
            r"views\[3\]\.entity: unknown entity 'itme' \(nearest: item",
        ),
        (("key: item_meta.author_id", "key: item_meta.author"), r"entities\[2\]\.key: .*nearest: item_meta\.author_id"),
        (("key: item_meta.author_id", "key: item_stats.popularity"), r"entities\[2\]\.key: .*scalar int64"),
        (
            ("inputs: [item_stats.popularity]", "inputs: [item_stats.topics]"),
            r"derived\[0\]\.inputs: log1p needs a scalar",
        ),
        (
            (
                "inputs: [member_profile.topics, item_stats.topics]",
                "inputs: [member_profile.topics, item_stats.popularity]",
            ),
            r"dot needs two float vectors",
        ),
        (
            ("- {name: popularity}", "- {name: popularity}\n      - {name: popularity}"),
            r"duplicate feature names \['popularity'\]",
        ),
        (("- {name: activity, default: 0.5}", "- {name: activity, shape: 3}"), r"views\[0\]\.features\[0\]\.shape"),
    ],
)
def test_bad_declarations_name_the_file_and_key_path(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert change[0] in FEATURES_YAML
    write_product(tmp_path, FEATURES_YAML.replace(change[0], change[1], 1))
    with pytest.raises(DeclarationError, match=expected):
        load_registry(tmp_path / "features")


def test_a_name_declared_in_two_files_is_refused(tmp_path: Path) -> None:
    write_product(tmp_path)
    (tmp_path / "features" / "zz_other.yaml").write_text("entities:\n  - {name: member, key: request}\n")
    with pytest.raises(
        DeclarationError,
        match=r"zz_other\.yaml: entities\[0\]\.name: entity 'member' is already declared in .*product\.yaml",
    ):
        load_registry(tmp_path / "features")


def test_derived_cycles_are_refused(tmp_path: Path) -> None:
    cyclic = (
        FEATURES_YAML + "  - {name: a, transform: log1p, inputs: [b]}\n  - {name: b, transform: log1p, inputs: [a]}\n"
    )
    write_product(tmp_path, cyclic)
    with pytest.raises(DeclarationError, match=r"cycle: a -> b -> a"):
        load_registry(tmp_path / "features")


def test_yaml_errors_are_one_line_per_problem(tmp_path: Path) -> None:
    write_product(tmp_path, "views: [\n")
    with pytest.raises(DeclarationError) as caught:
        load_registry(tmp_path / "features")
    assert str(caught.value).startswith(f"{tmp_path / 'features' / 'product.yaml'}: not valid YAML")
