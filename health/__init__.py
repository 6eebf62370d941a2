"""Online model health: streaming quantile sketches of every input feature and output head of a release,
compared with the trainer's offline sketches (PSI, KS), exported as gauges and checked against thresholds."""

from health.columns import WatchedColumns, watched_columns
from health.drift import Drift, DriftThresholds, HealthReport, ModelHealth, evaluate
from health.monitor import HealthMonitor, HealthSettings
from health.offline import (
    OfflineStats,
    load_offline_stats,
    offline_stats,
    offline_stats_path,
    release_stats_loader,
    save_offline_stats,
)
from health.sketches import ModelSketches

__all__ = [
    "Drift",
    "DriftThresholds",
    "HealthMonitor",
    "HealthReport",
    "HealthSettings",
    "ModelHealth",
    "ModelSketches",
    "OfflineStats",
    "WatchedColumns",
    "evaluate",
    "load_offline_stats",
    "offline_stats",
    "offline_stats_path",
    "release_stats_loader",
    "save_offline_stats",
    "watched_columns",
]
