"""Settings come from a YAML file, then QUASAR_* environment variables, then explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings, load_settings


def test_defaults() -> None:
    settings = GatewaySettings()
    assert settings.port == 50051
    assert settings.default_count == 50
    assert settings.max_count == 500
    assert settings.use_uvloop is True


def test_file_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("port: 6000\nmax_in_flight: 10\nuse_uvloop: false\nworld_dir: /data/world\n")
    monkeypatch.setenv("QUASAR_MAX_IN_FLIGHT", "20")
    settings = load_settings(config, port=7000)
    assert settings.port == 7000, "an explicit override beats file and env"
    assert settings.max_in_flight == 20, "env beats the file"
    assert settings.use_uvloop is False, "the file is read"
    assert settings.world_dir == Path("/data/world")


def test_unset_overrides_do_not_mask_the_file(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("port: 6000\n")
    assert load_settings(config, port=None).port == 6000


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("prot: 6000\n")
    with pytest.raises(ValidationError, match="prot"):
        load_settings(config)


def test_inconsistent_counts_are_rejected() -> None:
    with pytest.raises(ValidationError, match=r"default_count \(600\) exceeds max_count \(500\)"):
        GatewaySettings(default_count=600)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_the_second_pass_narrows_before_the_limit_rejects() -> None:
    with pytest.raises(ValueError, match="narrowing must come before rejecting"):
        GatewaySettings(overload_quality_latency_s=0.5, overload_target_latency_s=0.25)
