"""QualityGovernor: narrows above its latency target, widens again below the recovery point."""

from __future__ import annotations

import pytest

from gateway.quality import FULL_QUALITY, QualityGovernor, QualitySettings


def governor() -> QualityGovernor:
    return QualityGovernor(QualitySettings(target_latency_s=0.05, narrowed_quality=0.5, smoothing=0.5))


def test_full_quality_while_latency_is_under_target() -> None:
    quality = governor()
    for _ in range(20):
        quality.observe(0.02)
    assert quality.quality == FULL_QUALITY


def test_narrows_when_smoothed_latency_passes_target_and_recovers_with_hysteresis() -> None:
    quality = governor()
    quality.observe(0.02)
    quality.observe(0.2)  # mean 0.11 > 0.05
    assert quality.quality == 0.5
    quality.observe(0.035)  # mean ~0.07: still above target
    quality.observe(0.035)  # mean ~0.05: between recovery point (0.04) and target: stays narrowed
    assert quality.quality == 0.5
    for _ in range(5):
        quality.observe(0.01)
    assert quality.mean_latency_s is not None
    assert quality.mean_latency_s < 0.04
    assert quality.quality == FULL_QUALITY


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target_latency_s": 0.0}, "target_latency_s"),
        ({"target_latency_s": 0.05, "narrowed_quality": 0.0}, "narrowed_quality"),
        ({"target_latency_s": 0.05, "recover_ratio": 1.5}, "recover_ratio"),
        ({"target_latency_s": 0.05, "smoothing": 0.0}, "smoothing"),
    ],
)
def test_bad_settings_are_refused(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QualitySettings(**fields)
