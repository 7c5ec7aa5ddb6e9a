"""PNG figures: precision-recall curves and micrographs with picks overlaid."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from cryopick.io.atomic import atomic_write
from cryopick.evaluation.metrics import PRCurve, average_precision, best_cut, best_threshold

if TYPE_CHECKING:  # matplotlib is imported on first use: the picker needs it only for plots
    from matplotlib.figure import Figure


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters or CI
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(path: str | Path, curves: Mapping[str, PRCurve], title: str = "Precision-recall") -> Path:
    """One PNG with a precision-recall curve per entry, best-F1 point marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    for label, c in curves.items():
        if len(c.recall) == 0:
            continue
        f1, thr = best_threshold(c)
        i = best_cut(c)
        ax.plot(c.recall, c.precision, label=f"{label}: AP {average_precision(c):.3f}, best F1 {f1:.3f} @ {thr:.2f}")
        ax.plot(c.recall[i], c.precision[i], "o", color=ax.lines[-1].get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    return _save(fig, path)


def plot_picks(
    path: str | Path,
    image: np.ndarray,
    pred_xy: np.ndarray,
    diameter: float,
    true_xy: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """The micrograph with predicted picks (circles) and true picks (crosses) overlaid.

    ``pred_xy`` and ``true_xy`` are in the pixels of ``image``.
    """
    plt = _pyplot()
    from matplotlib.collections import EllipseCollection

    h, w = image.shape
    fig, ax = plt.subplots(figsize=(8, 8 * h / w), dpi=110)
    lo, hi = np.percentile(image, [1, 99])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    if len(pred_xy):
        ax.add_collection(
            EllipseCollection(
                diameter, diameter, 0, units="xy", offsets=pred_xy, offset_transform=ax.transData,
                facecolors="none", edgecolors="#00d0ff", linewidths=0.8,
            )
        )
    if true_xy is not None and len(true_xy):
        ax.plot(true_xy[:, 0], true_xy[:, 1], "+", color="#ff8c00", ms=4, mew=0.8, label="expert")
    ax.plot([], [], "o", mfc="none", mec="#00d0ff", label=f"cryopick ({len(pred_xy)})")
    ax.legend(loc="upper right", fontsize=8)
    ax.set(xlim=(0, w), ylim=(h, 0), title=title)
    ax.axis("off")
    return _save(fig, path)


def plot_histogram(path: str | Path, values: np.ndarray, xlabel: str, title: str) -> Path:
    """A histogram PNG (e.g. particles per micrograph)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.hist(values, bins=min(40, max(5, len(values) // 5 or 5)), color="#3b7dd8")
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
