"""The edge band that expert picks leave empty, learned from the training labels.

Experts (and RELION's extraction) skip particles whose box would cross the micrograph edge, so
expert picks keep a band along the edges free: on EMPIAR-10017 no pick of the 13,015 lies
closer than 32 px to an edge (a 64 px box). A picker that fills that band produces picks that
score as false positives and that extraction discards anyway. Training measures the band on the
labeled micrographs and stores it with the model; ``cryopick pick --border`` overrides it. Labels
too few to show a band (sparse picks, one region) get the particle radius: a particle centred closer
than that to an edge is cut by it, and extraction (cryoSPARC's, RELION's) drops it with its box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cryopick.io.coords import Box, inside_boxes

# An empty band counts as the experts' convention only if uniform picking would have put at
# least this many picks in it (P(empty by chance) = e^-5 < 1 %); fewer labels get FEW_LABELS_BAND.
MIN_EXPECTED_IN_BAND = 5.0
# The band (× diameter) of labels too few to show one: a particle this close to an edge is cut by it.
# Never wider than the labels' own closest pick to an edge (minus the slack), so a kind of pick the expert made stays.
FEW_LABELS_BAND = 0.5
# Predicted centres scatter by a few px around the true ones: stop the band a little short.
SLACK_DIAMETERS = 0.1
MAX_BORDER_FRACTION = 0.25  # never more than this share of the shorter image side


def edge_distance(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance of each (x, y) pixel position to the nearest image edge.

    Args:
        xy: (N, 2) positions in pixels of an image of ``shape`` (H, W); pixel centres at integers.
    Returns:
        (N,) distances in the same pixels (0 on the first/last row or column).
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    return np.minimum.reduce([xy[:, 0], xy[:, 1], (w - 1) - xy[:, 0], (h - 1) - xy[:, 1]])


def drop_near_edge(
    xy: np.ndarray, scores: np.ndarray, shape: tuple[int, int], border: float
) -> tuple[np.ndarray, np.ndarray]:
    """Picks at least ``border`` px from every edge of a ``shape`` (H, W) image."""
    if border <= 0 or len(xy) == 0:
        return xy, scores
    keep = edge_distance(xy, shape) >= border
    return xy[keep], scores[keep]


def outside_band(
    shape: tuple[int, int], scale: tuple[float, float], original_shape: tuple[int, int], border: float
) -> np.ndarray | None:
    """Which pixels of a binned (h, w) map lie at least ``border`` ORIGINAL px from every edge.

    Peak finding takes its candidates only where this is True: the same rule, in original px,
    for ``cryopick pick``, validation during training and the scores inside campaigns.

    Args:
        shape: (h, w) of the binned map; scale: (sy, sx) original px per binned px.
        original_shape: (H, W) of the micrograph as read.
    Returns:
        (h, w) bool, or None when ``border`` <= 0 (no band).
    """
    if border <= 0:
        return None
    h, w = shape
    rows = np.arange(h, dtype=np.float64) * scale[0]
    cols = np.arange(w, dtype=np.float64) * scale[1]
    row_ok = np.minimum(rows, (original_shape[0] - 1) - rows) >= border
    col_ok = np.minimum(cols, (original_shape[1] - 1) - cols) >= border
    return row_ok[:, None] & col_ok[None, :]


def _labeled_area(shape: tuple[int, int], boxes: Sequence[Box] | None, b: float) -> tuple[float, float]:
    """(area labeled, the part of it within ``b`` of an edge), ORIGINAL px²: the union of ``boxes`` (None: the whole
    micrograph), measured exactly on the grid of the boxes' and the band's edges."""
    h, w = shape
    if boxes is None:
        return float(h * w), float(h * w - max(h - 2 * b, 0.0) * max(w - 2 * b, 0.0))
    xs = np.unique(np.clip([0.0, w, b, w - b, *[v for x0, _, x1, _ in boxes for v in (x0, x1)]], 0.0, w))
    ys = np.unique(np.clip([0.0, h, b, h - b, *[v for _, y0, _, y1 in boxes for v in (y0, y1)]], 0.0, h))
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    inside = np.zeros((len(cy), len(cx)), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside |= ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]
    cell = np.outer(np.diff(ys), np.diff(xs)) * inside
    interior = ((cy >= b) & (cy <= h - b))[:, None] & ((cx >= b) & (cx <= w - b))[None, :]
    return float(cell.sum()), float(cell[~interior].sum())


def learn_border(labels: Sequence[tuple[np.ndarray, tuple[int, int]]], diameter: float,
                 boxes: Sequence[Sequence[Box] | None] | None = None) -> float:
    """The empty edge band of expert picks, in original px: 0 when picks reach the edge, the particle radius
    (``FEW_LABELS_BAND``) when the labels are too few to show a band.

    A micrograph labeled in regions (complete inside them, nothing known outside) shows the band along the
    edges its regions reach: the band is the smallest edge distance of the picks inside labeled areas, and it
    counts only if uniform picking over those areas would have put ``MIN_EXPECTED_IN_BAND`` picks in it.

    Args:
        labels: per micrograph, (N, 2) expert picks and the micrograph's (H, W), original px.
        diameter: particle diameter, original px.
        boxes: per micrograph, the regions labeled completely as (x0, y0, x1, y1) original px, or None where the
            micrograph is labeled whole; None: every micrograph whole.
    """
    areas = []
    for i, (xy, shape) in enumerate(labels):
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        regions = None if boxes is None else boxes[i]
        if regions is not None:
            xy = xy[inside_boxes(xy, regions)]
        areas.append((xy, shape, regions))
    dists = [edge_distance(xy, shape) for xy, shape, _ in areas if len(xy)]
    cap = MAX_BORDER_FRACTION * min((min(shape) for _, shape in labels), default=0)
    if not dists:
        return float(min(FEW_LABELS_BAND * diameter, cap))
    band = float(min(d.min() for d in dists))
    if band <= 0:
        return 0.0
    expected = 0.0
    for xy, shape, regions in areas:
        total, in_band = _labeled_area(shape, regions, band)
        expected += len(xy) * in_band / total if total > 0 else 0.0
    if expected < MIN_EXPECTED_IN_BAND:
        band = min(band, FEW_LABELS_BAND * diameter + SLACK_DIAMETERS * diameter)
    return float(max(0.0, min(band, cap) - SLACK_DIAMETERS * diameter))
