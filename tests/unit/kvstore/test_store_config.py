from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from kvstore.config import EmbeddedStoreConfig, RedisStoreConfig, StoreConfig
from kvstore.embedded import EmbeddedStore

ADAPTER: TypeAdapter[EmbeddedStoreConfig | RedisStoreConfig] = TypeAdapter(StoreConfig)


def test_parses_the_embedded_kind_and_builds_without_io(tmp_path: Path) -> None:
    config = ADAPTER.validate_python({"kind": "embedded", "root": str(tmp_path / "not-yet")})
    assert isinstance(config, EmbeddedStoreConfig)
    assert config.max_versions_per_table == 3
    store = config.build("tables")
    assert isinstance(store, EmbeddedStore)
    assert store.name == "tables"
    assert not (tmp_path / "not-yet").exists()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "memcached", "url": "x"}, "does not match any of the expected tags: 'embedded', 'redis'"),
        ({"kind": "embedded"}, "root"),
        ({"kind": "embedded", "root": "/x", "mmap": True}, "Extra inputs are not permitted"),
        ({"kind": "embedded", "root": "/x", "max_versions_per_table": 0}, "greater than 0"),
    ],
    ids=["unknown-kind", "no-root", "extra-field", "no-versions"],
)
def test_rejects_bad_configs(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ADAPTER.validate_python(raw)
