"""Figures for the dashboard, built from the tidy tables of :mod:`cryopick.dashboard.data`.

Charts are Altair (interactive, drawn by the browser); the micrograph viewer is a Matplotlib
``Figure`` made without pyplot, so no global figure state leaks between Streamlit sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import altair as alt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from cryopick.dashboard.data import Preview

METRIC_COLORS = {"precision": "#1f77b4", "recall": "#ff7f0e", "f1": "#2ca02c"}
COVERAGE_COLORS = {"positive": "#2ca02c", "negative": "#7f7f7f", "ignored": "#ff7f0e"}
STAGE_ORDER = ["train", "predict", "tune", "score", "other"]


def _round_axis(title: str = "round") -> alt.X:
    return alt.X("round:O", title=title, axis=alt.Axis(labelAngle=0))


def metrics_chart(long: pd.DataFrame, height: int = 300) -> alt.Chart:
    """Precision, recall and F1 per round: lines with points (``data.metrics_long`` table)."""
    keys = [k for k in METRIC_COLORS if k in set(long["metric"])] or sorted(set(long["metric"]))
    color = alt.Color("metric:N", scale=alt.Scale(domain=keys, range=[METRIC_COLORS.get(k, "#333") for k in keys]),
                      legend=alt.Legend(orient="bottom", title=None))
    # Axis from a round tenth below the lowest value to 1: small per-round gains stay visible.
    low = float(np.nanmin(long["value"])) if len(long) else 0.0
    floor = max(0.0, np.floor((low - 0.05) * 10) / 10)
    base = alt.Chart(long).encode(
        x=_round_axis(),
        y=alt.Y("value:Q", title="score", scale=alt.Scale(domain=[floor, 1])),
        color=color,
        tooltip=["round:O", "metric:N", alt.Tooltip("value:Q", format=".3f")],
    )
    return (base.mark_line() + base.mark_point(filled=True, size=60)).properties(
        height=height, title="Precision, recall and F1 per round")


def pr_chart(pr: pd.DataFrame, height: int = 340) -> alt.Chart:
    """One precision-recall curve per round (``data.pr_curves`` table)."""
    df = pr.assign(label="round " + pr["round"].astype(str))
    return alt.Chart(df).mark_line().encode(
        x=alt.X("recall:Q", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("precision:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("label:N", title="round", sort=sorted(set(df["label"]), key=lambda s: int(s.split()[1]))),
        order=alt.Order("threshold:Q", sort="descending"),
        tooltip=["label:N", alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("precision:Q", format=".3f"),
                 alt.Tooltip("recall:Q", format=".3f")],
    ).properties(height=height, title="Precision-recall curve of each round")


def tune_chart(trials: pd.DataFrame, height: int = 320) -> alt.Chart:
    """Tune search: threshold vs F1 per trial, one colour per round, the chosen trial enlarged."""
    df = trials.assign(label="round " + trials["round"].astype(str),
                       chosen=trials.get("chosen", pd.Series(False, index=trials.index)).astype(bool))
    return alt.Chart(df).mark_point(filled=True).encode(
        x=alt.X("threshold:Q", title="score threshold"),
        y=alt.Y("f1:Q", title="F1"),
        color=alt.Color("label:N", title="round", sort=sorted(set(df["label"]), key=lambda s: int(s.split()[1]))),
        shape=alt.Shape("min_distance:N", title="min distance"),
        size=alt.condition("datum.chosen", alt.value(220), alt.value(50)),
        tooltip=["label:N", alt.Tooltip("threshold:Q", format=".3f"), "min_distance:Q",
                 alt.Tooltip("f1:Q", format=".3f"), alt.Tooltip("precision:Q", format=".3f"),
                 alt.Tooltip("recall:Q", format=".3f"), "chosen:N"],
    ).properties(height=height, title="Tune search: threshold vs F1 (large = chosen)")


def coverage_chart(coverage: pd.DataFrame, height: int = 280) -> alt.Chart:
    """Stacked bars: share of pixels positive / negative / ignored in each round's pseudo-labels."""
    labels = [k for k in COVERAGE_COLORS if k in set(coverage["label"])]
    return alt.Chart(coverage).mark_bar().encode(
        x=_round_axis(),
        y=alt.Y("share:Q", title="share of pixels", stack="zero", axis=alt.Axis(format="%")),
        color=alt.Color("label:N", scale=alt.Scale(domain=labels, range=[COVERAGE_COLORS[k] for k in labels]),
                        title="pseudo-label"),
        order=alt.Order("label:N"),
        tooltip=["round:O", "label:N", alt.Tooltip("share:Q", format=".1%")],
    ).properties(height=height, title="Pseudo-label coverage per round")


def timing_chart(timings: pd.DataFrame, height: int = 280) -> alt.Chart:
    """Stacked bars: seconds per stage in each round."""
    stages = [s for s in STAGE_ORDER if s in set(timings["stage"])]
    return alt.Chart(timings).mark_bar().encode(
        x=_round_axis(),
        y=alt.Y("seconds:Q", title="seconds", stack="zero"),
        color=alt.Color("stage:N", sort=stages, scale=alt.Scale(domain=stages)),
        tooltip=["round:O", "stage:N", alt.Tooltip("seconds:Q", format=".1f")],
    ).properties(height=height, title="Time per stage")


def micrograph_figure(
    preview: Preview,
    min_score: float | None = None,
    show_heatmap: bool = True,
    title: str = "",
    width_in: float = 7.0,
) -> Figure:
    """The binned micrograph with the heatmap, the round's picks (circles) and true picks (crosses).

    Picks scoring below ``min_score`` are hidden. The heatmap is stretched from its median (fully
    transparent) to its maximum (most opaque), so the micrograph stays visible where the picker
    sees background, and a weak early model's flat heatmap still shows its structure; the
    stretched range is printed in the corner.
    """
    img = preview.image
    h, w = img.shape
    fig = Figure(figsize=(width_in, width_in * h / w + 0.4), dpi=100)
    ax = fig.add_subplot()
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    if show_heatmap and preview.heatmap.shape == img.shape:
        heat = np.nan_to_num(preview.heatmap.astype(np.float32))
        lo, hi = float(np.median(heat)), float(heat.max())
        norm = np.clip((heat - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(heat)
        ax.imshow(norm, cmap="inferno", vmin=0, vmax=1, alpha=0.7 * norm, interpolation="nearest")
        ax.text(0.01, 0.01, f"heatmap {lo:.2f}–{hi:.2f}", transform=ax.transAxes, fontsize=8, color="white",
                va="bottom", bbox={"facecolor": "black", "alpha": 0.5, "pad": 2, "linewidth": 0})
    keep = np.ones(len(preview.picks_xy), dtype=bool) if min_score is None else preview.picks_score >= min_score
    picks = preview.to_binned(preview.picks_xy[keep])
    truth = preview.to_binned(preview.truth_xy)
    marker = max(30.0, (width_in * 100 / w * 6) ** 2)  # about 12 binned px across
    if len(truth):
        ax.scatter(truth[:, 0], truth[:, 1], marker="+", s=marker * 0.6, c="#ff3030", linewidths=1.2,
                   label=f"true picks ({len(truth)})")
    if len(picks):
        ax.scatter(picks[:, 0], picks[:, 1], marker="o", s=marker, facecolors="none", edgecolors="#00e5ff",
                   linewidths=1.2, label=f"picks ({len(picks)})")
    ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5), xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=10)
    if len(picks) or len(truth):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
