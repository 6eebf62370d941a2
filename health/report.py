"""Health of the releases a gateway served, read back from its state directory: the drift table and plots
(`quasar health check` and `quasar health report`)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.table import Table

from health.drift import DriftThresholds, ModelHealth, evaluate
from health.monitor import health_dir, merge_window, read_windows
from health.offline import OfflineStats, release_stats_loader
from health.sketches import ModelSketches

_RANKS = np.linspace(0.01, 0.99, 99).tolist()
_GRID_COLUMNS = 4


@dataclass(frozen=True)
class Observed:
    """One (model, release) as the state directory holds it: its evaluation, the merged online sketches of
    the window evaluated and the offline stats compared with (None when the release has none)."""

    health: ModelHealth
    online: ModelSketches
    offline: OfflineStats | None


def collect(state_dir: Path, releases_dir: Path, thresholds: DriftThresholds) -> list[Observed]:
    """Every (model, release) with window files under `state_dir`, sorted, evaluated like the monitor's
    gauges: the newest window once it holds `thresholds.min_samples` rows, else the newest before it (the
    last complete one) when there is one. ValueError naming the file when a stats file is corrupt."""
    files = read_windows(state_dir)
    windows: dict[tuple[str, str], set[float]] = defaultdict(set)
    for file in files:
        windows[(file.model, file.release)].add(file.window_start_s)
    load = release_stats_loader(releases_dir)
    observed = []
    for (model, release), starts in sorted(windows.items()):
        newest, *older = sorted(starts, reverse=True)
        window = newest
        online = merge_window(files, model, release, newest)
        if online is not None and online.n < thresholds.min_samples and older:
            window = older[0]
            online = merge_window(files, model, release, window)
        if online is None:
            continue
        stats = load(model, release)
        drifts = evaluate(stats.sketches, online, thresholds) if stats is not None else []
        health = ModelHealth(model, release, online.n, tuple(drifts), stats is not None, window)
        observed.append(Observed(health=health, online=online, offline=stats))
    return observed


def health_table(observed: Iterable[Observed]) -> Table:
    """One row per (model, release, name): n, PSI, KS and the status, alarms in red."""
    table = Table(title="model health (online window vs offline stats)")
    for column in ("model", "release", "window", "name", "kind", "n", "PSI", "KS", "status"):
        table.add_column(column, justify="right" if column in ("n", "PSI", "KS") else "left")
    for entry in observed:
        health = entry.health
        window = _when(health.window_start_s)
        if not health.drifts:
            note = "no offline stats" if not health.offline else "no common names"
            table.add_row(health.model, health.release, window, "-", "-", f"{health.samples:,}", "-", "-", note)
        for drift in health.drifts:
            status = drift.status
            table.add_row(
                health.model,
                health.release,
                window,
                drift.name,
                drift.kind,
                f"{drift.n_online:,}",
                _number(drift.psi),
                _number(drift.ks_statistic),
                f"[red]{status}[/red]" if drift.alarm else status,
            )
    return table


def plot_distributions(observed: Iterable[Observed], out_dir: Path) -> list[Path]:
    """Per (model, release), a grid of the online and offline CDF of every feature and head (drawn from
    the sketches' quantiles); alarmed names titled in red. Returns the PNGs written."""
    from matplotlib.figure import Figure  # matplotlib loads slowly: only the report draws

    written = []
    for entry in observed:
        health = entry.health
        drifts = {(d.kind, d.name): d for d in health.drifts}
        named = entry.online.named()
        columns = min(_GRID_COLUMNS, max(1, len(named)))
        rows = math.ceil(len(named) / columns) if named else 1
        figure = Figure(figsize=(3.4 * columns, 2.6 * rows), layout="constrained")
        axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
        for ax, (kind, name, sketch) in zip(axes, named, strict=False):
            drift = drifts.get((kind, name))
            if entry.offline is not None and _watches(entry.offline.sketches, kind, name):
                reference = entry.offline.sketches.sketch(kind, name)
                if not reference.is_empty():
                    ax.plot(reference.get_quantiles(_RANKS), _RANKS, label="offline", color="tab:gray")
            if not sketch.is_empty():
                ax.plot(sketch.get_quantiles(_RANKS), _RANKS, label="online", color="tab:blue")
            title = f"{name} ({kind})"
            if drift is not None:
                title += f"\nPSI {_number(drift.psi)}  KS {_number(drift.ks_statistic)}"
            ax.set_title(title, fontsize=8, color="red" if drift is not None and drift.alarm else "black")
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        for ax in axes[len(named) :]:
            ax.set_visible(False)
        figure.suptitle(f"{health.model} @ {health.release}: window from {_when(health.window_start_s)}")
        written.append(_save(figure, out_dir / f"distributions-{_file(health.model)}-{_file(health.release)}.png"))
    return written


def plot_history(state_dir: Path, out_dir: Path, thresholds: DriftThresholds) -> list[Path]:
    """Per (model, release), PSI and the KS distance of each name over time (`history.jsonl`; evaluations
    with too few samples left out). Returns the PNGs written (none without history)."""
    from matplotlib.figure import Figure

    series: dict[tuple[str, str], dict[str, list[tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for line in _lines(health_dir(state_dir) / "history.jsonl"):
        if line.get("sufficient") and line.get("psi") is not None and line.get("ks") is not None:
            key = (str(line["model"]), str(line["release"]))
            series[key][f"{line['name']} ({line['kind']})"].append((line["time_s"], line["psi"], line["ks"]))
    written = []
    for (model, release), by_name in sorted(series.items()):
        figure = Figure(figsize=(10, 6), layout="constrained")
        psi_ax, ks_ax = figure.subplots(2, 1, sharex=True)
        for name, points in sorted(by_name.items()):
            times = [_datetime(t) for t, _, _ in points]
            psi_ax.plot(times, [p for _, p, _ in points], marker=".", label=name)
            ks_ax.plot(times, [k for _, _, k in points], marker=".", label=name)
        psi_ax.axhline(thresholds.psi_max, color="red", linestyle="--", linewidth=1, label="psi_max")
        psi_ax.set_ylabel("PSI")
        ks_ax.set_ylabel("KS distance")
        psi_ax.legend(fontsize=6, ncol=2)
        figure.suptitle(f"{model} @ {release}: drift over time")
        written.append(_save(figure, out_dir / f"history-{_file(model)}-{_file(release)}.png"))
    return written


def plot_shadow(state_dir: Path, out_dir: Path) -> list[Path]:
    """Per (model, shadow target), each head's mean absolute delta, top-K overlap and Kendall's tau over
    time (`shadow.jsonl`). Returns the PNGs written (none without shadow diffs)."""
    from matplotlib.figure import Figure

    series: dict[tuple[str, str], dict[str, list[tuple[float, Any, Any, Any]]]] = defaultdict(lambda: defaultdict(list))
    for line in _lines(health_dir(state_dir) / "shadow.jsonl"):
        for head, values in dict(line.get("heads", {})).items():
            series[(str(line["model"]), str(line["target"]))][head].append(
                (line["time_s"], values.get("mean_abs_delta"), values.get("topk_overlap"), values.get("kendall_tau"))
            )
    metrics = ("mean |delta|", "top-K overlap", "Kendall tau")
    written = []
    for (model, target), by_head in sorted(series.items()):
        figure = Figure(figsize=(10, 7), layout="constrained")
        axes = figure.subplots(3, 1, sharex=True)
        for head, points in sorted(by_head.items()):
            times = [_datetime(p[0]) for p in points]
            for i, ax in enumerate(axes):
                values = [math.nan if p[i + 1] is None else p[i + 1] for p in points]
                ax.plot(times, values, marker=".", label=head)
        for ax, metric in zip(axes, metrics, strict=True):
            ax.set_ylabel(metric)
        axes[0].legend(fontsize=6)
        figure.suptitle(f"{model}: shadow {target} vs primary")
        written.append(_save(figure, out_dir / f"shadow-{_file(model)}-{_file(target)}.png"))
    return written


def _watches(sketches: ModelSketches, kind: str, name: str) -> bool:
    return name in (sketches.features if kind == "feature" else sketches.heads)


def _lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (a torn last line, from a writer that died mid-write, skipped)."""
    if not path.exists():
        return []
    found = []
    for raw in path.read_bytes().splitlines():
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _file(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _datetime(time_s: float) -> datetime:
    return datetime.fromtimestamp(time_s, UTC)


def _when(time_s: float) -> str:
    return _datetime(time_s).strftime("%Y-%m-%d %H:%M:%S UTC")
