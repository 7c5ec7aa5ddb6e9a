"""The files a round writes besides its model (docs/dev/contracts.md): CSVs, PR curves, previews.

Every file is written atomically.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryopick.io.atomic import atomic_write

if TYPE_CHECKING:
    from cryopick.evaluation.metrics import PRCurve

def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV written atomically."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_pr_curve(path: Path, curve: PRCurve, max_points: int = 500) -> None:
    """threshold,precision,recall; thinned to ``max_points`` evenly spaced cut points."""
    n = len(curve.thresholds)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int)) if n else np.zeros(0, int)
    write_csv(path, ("threshold", "precision", "recall"),
              ((f"{curve.thresholds[i]:.6g}", f"{curve.precision[i]:.6g}", f"{curve.recall[i]:.6g}") for i in idx))


def block_reduce(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (edges padded by replication): (h, w) -> (ceil(h/k), ceil(w/k))."""
    if k <= 1:
        return a
    h, w = a.shape
    ph, pw = (-h) % k, (-w) % k
    a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).mean(axis=(1, 3))


def write_tune_csv(path: Path, trials: Sequence[dict[str, float]]) -> None:
    """tune.csv: threshold,min_distance,f1,precision,recall (one row per trial)."""
    keys = ("threshold", "min_distance", "f1", "precision", "recall")
    write_csv(path, keys, ([f"{t[k]:.6g}" for k in keys] for t in trials))
