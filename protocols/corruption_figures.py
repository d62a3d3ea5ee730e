"""Figures of the corruption protocol: one run's severity curves, and a comparison across methods
(drawn with `bench/figures.py`, written by the runner and the leaderboard)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from robustbench_lite.bench.corruptions.tables import ALL, BENCHMARK, FAMILIES, SEVERITIES
from robustbench_lite.bench.figures import new_figure, percent_axis

_FAMILY_ORDER = ("noise", "blur", "weather", "digital", "extra")


def severity_figure(accuracies: Mapping[tuple[str, int], float], clean: float, title: str):
    """Accuracy against severity (0 = clean) per corruption family and the mean over the 15."""
    fig, ax = new_figure(1, (6.0, 4.0))
    ax = ax[0]
    severities = sorted({s for _, s in accuracies})
    for family in _FAMILY_ORDER:
        names = [c for c in ALL if FAMILIES[c] == family and (c, severities[0]) in accuracies]
        if names:
            curve = [sum(accuracies[(c, s)] for c in names) / len(names) for s in severities]
            ax.plot([0, *severities], [100 * clean, *(100 * v for v in curve)], marker="o",
                    linewidth=1.2, linestyle="--" if family == "extra" else "-", label=family)
    benchmark = [c for c in BENCHMARK if (c, severities[0]) in accuracies]
    if benchmark:
        mean = [sum(accuracies[(c, s)] for c in benchmark) / len(benchmark) for s in severities]
        ax.plot([0, *severities], [100 * clean, *(100 * v for v in mean)], color="black",
                linewidth=2.5, marker="s", label=f"mean of {len(benchmark)}")
    _axes(ax, "severity (0 = clean)", "top-1 accuracy", title, [0, *severities])
    return fig


def comparison_figure(rows: pd.DataFrame, title: str = ""):
    """Methods side by side from the long-format run rows of one (dataset, preset) leaderboard,
    or None without corruption cells.

    Left: mean accuracy over the benchmark corruptions against severity (0 = clean). Right: error
    per corruption. Seeds are averaged; one line per (method, backbone), the same colour in both.
    """
    rows = rows.copy()
    rows["severity"] = rows["severity"].astype(str)
    one_backbone = rows["backbone"].nunique() == 1
    rows["label"] = rows["method"] if one_backbone else rows["method"] + " · " + rows["backbone"]
    labels = sorted(rows["label"].unique())
    if not any(_severity_curve(rows[rows["label"] == label]) for label in labels):
        return None
    fig, (left, right) = new_figure(2, (14.0, 5.0), width_ratios=(1, 2))
    colours = _colours(len(labels))
    for label, colour in zip(labels, colours):
        own = rows[rows["label"] == label]
        curve = _severity_curve(own)
        if curve:
            xs, ys = zip(*curve)
            left.plot(xs, [100 * y for y in ys], marker="o", color=colour, label=label)
        errors = _per_corruption(own)
        if errors:
            right.plot(range(len(errors)), [100 * e for e in errors.values()], marker="o",
                       color=colour, linewidth=1, label=label)
            right.set_xticks(range(len(errors)), [c.replace("_", " ") for c in errors],
                             rotation=60, ha="right", fontsize=8)
    _axes(left, "severity (0 = clean)", "mean top-1 accuracy (15 corruptions)", "", [0, *SEVERITIES])
    _axes(right, "", "error (mean over severities)", "", None, legend=False)
    fig.suptitle(title or ", ".join(sorted(rows["dataset"].unique())) + " · corruptions")
    return fig


def _colours(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def _severity_curve(rows: pd.DataFrame) -> list[tuple[int, float]]:
    acc = rows[rows["metric"] == "accuracy"]
    clean = acc[acc["corruption"] == ""]["value"]
    cells = acc[acc["corruption"].isin(BENCHMARK)]
    if clean.empty or cells.empty:
        return []
    by_seed = cells.groupby(["seed", "severity"])["value"].mean().groupby("severity").mean()
    points = [(0, float(clean.mean()))]
    points += sorted((int(s), float(v)) for s, v in by_seed.items())
    return points


def _per_corruption(rows: pd.DataFrame) -> dict[str, float]:
    errors = rows[rows["metric"] == "error"]
    means = errors.groupby("corruption")["value"].mean()
    return {c: float(means[c]) for c in ALL if c in means.index}


def _axes(ax, xlabel: str, ylabel: str, title: str, xticks, legend: bool = True) -> None:
    ax.set_xlabel(xlabel)
    percent_axis(ax, ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if xticks is not None:
        ax.set_xticks(xticks)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
