"""Heatmap -> particle centres: local maxima above a threshold with a minimum distance (NMS)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


def find_peaks(
    heatmap: np.ndarray,
    min_distance: float,
    threshold: float = 0.5,
    smooth_sigma: float = 0.0,
    border: float = 0.0,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``heatmap`` at least ``min_distance`` px apart, strongest first.

    Candidates are the pixels equal to the maximum of their (2r+1)^2 window; a greedy pass in
    descending score then enforces the exact Euclidean distance (the square window alone would
    let plateaus and diagonal neighbours through).

    Args:
        heatmap: (H, W) scores.
        min_distance: minimum centre-to-centre distance, px.
        threshold: keep peaks with score >= threshold.
        smooth_sigma: Gaussian smoothing before peak finding, px; centres the peak of a flat blob.
        border: drop peaks closer than this to the image edge, px.
        allowed: (H, W) bool; candidates where it is False are dropped before suppression.

    Returns:
        xy: (N, 2) float64 (x, y) peak positions, px.
        scores: (N,) float64 heatmap value at each peak (after smoothing).
    """
    h = ndimage.gaussian_filter(heatmap.astype(np.float32), smooth_sigma) if smooth_sigma > 0 else heatmap
    r = max(1, int(np.floor(min_distance)))
    maxed = ndimage.maximum_filter(h, size=2 * r + 1, mode="constant", cval=-np.inf)
    cand = (h == maxed) & (h >= threshold)
    if border > 0:
        b = int(np.ceil(border))
        cand[:b] = cand[-b:] = False
        cand[:, :b] = cand[:, -b:] = False
    if allowed is not None:
        cand &= allowed
    rows, cols = np.nonzero(cand)
    scores = h[rows, cols].astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    xy = np.stack([cols, rows], axis=1).astype(np.float64)[order]
    scores = scores[order]
    keep = greedy_nms(xy, min_distance)
    return xy[keep], scores[keep]


def greedy_nms(xy: np.ndarray, min_distance: float) -> np.ndarray:
    """Indices to keep from score-sorted points so no two kept are closer than ``min_distance``."""
    n = len(xy)
    if n == 0 or min_distance <= 0:
        return np.arange(n)
    tree = cKDTree(xy)
    pairs = tree.query_pairs(min_distance - 1e-9, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(n)
    # Points are sorted by score, so in each pair the smaller index is the stronger one.
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs:
        lo, hi = (a, b) if a < b else (b, a)
        neighbours.setdefault(int(lo), []).append(int(hi))
    suppressed = np.zeros(n, dtype=bool)
    for i in range(n):
        if suppressed[i]:
            continue
        for j in neighbours.get(i, ()):
            suppressed[j] = True
    return np.nonzero(~suppressed)[0]


def connected_boxes(heatmap: np.ndarray, threshold: float) -> np.ndarray:
    """Bounding boxes of connected regions above ``threshold``.

    Returns:
        (N, 4) int array of (x0, y0, x1, y1), end-exclusive, one per 8-connected component.
    """
    labels, n = ndimage.label(heatmap >= threshold, structure=np.ones((3, 3)))
    boxes = [
        (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop) for sl in ndimage.find_objects(labels) if sl
    ]
    return np.array(boxes, dtype=np.int64).reshape(-1, 4)


def max_near(heatmap: np.ndarray, xy: np.ndarray, radius: float) -> np.ndarray:
    """The heatmap's maximum within ``radius`` px of each point (a square window of that half-edge).

    Args:
        heatmap: (H, W) scores.
        xy: (N, 2) points (x = column, y = row), px of ``heatmap``; those outside it read 0.
        radius: half-edge of the window, px (at least one pixel).

    Returns:
        (N,) float array.
    """
    h, w = heatmap.shape
    r = max(1, int(round(radius)))
    out = np.zeros(len(xy), dtype=np.float64)
    for k, (x, y) in enumerate(np.round(np.asarray(xy, dtype=np.float64).reshape(-1, 2)).astype(int)):
        if 0 <= y < h and 0 <= x < w:
            out[k] = float(heatmap[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].max())
    return out


def mean_max_near(parts: Iterable[tuple[np.ndarray, np.ndarray, float]]) -> float | None:
    """Mean of :func:`max_near` over all points of (heatmap, points, radius) parts (None: no point in any)."""
    values = [max_near(heatmap, xy, radius) for heatmap, xy, radius in parts]
    flat = np.concatenate(values) if values else np.zeros(0)
    return float(flat.mean()) if flat.size else None
