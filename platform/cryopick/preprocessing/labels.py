"""Particle centres -> label masks (expert circles, pseudo-label thresholds) and their coverage.

Mask values: 1 = particle, 0 = background, -1 = ignore (no gradient; a teacher may fill it),
-2 = held back for validation (never a target, not even the teacher's), -3 = unpicked pixel of a sparsely
picked micrograph where the share of particles among such pixels is known (positive-unlabeled: see
:func:`cryopick.training.loss.masked_bce`).
"""

from __future__ import annotations

import numpy as np

IGNORE = -1
HELD = -2
UNPICKED = -3
# circle radius of a labeled particle, as a share of the particle radius: the centre, not the whole
# particle, is what the network learns to mark (chosen on EMPIAR-10017 dev; docs/design.md)
LABEL_RADIUS_FRACTION = 0.35


MAX_PRIOR = 0.5  # an unpicked pixel is never taken as more likely particle than background


def unpicked_prior(disk_cover: float, share: float) -> float:
    """Share of the unpicked pixels that lie on an unpicked particle's label disk: the positive-unlabeled prior of
    the training loss (:func:`cryopick.training.loss.masked_bce`).

    With d = ``disk_cover``, the share of the pixels the picks' disks cover, and ``share`` the share of the particles
    picked, the unpicked particles cover d (1 / share - 1) of the pixels and the unpicked pixels 1 - d. 0 for
    complete picks or no cover; at most :data:`MAX_PRIOR`.
    """
    if not 0.0 < disk_cover < 1.0 or share >= 1.0:
        return 0.0
    s = max(share, 1e-3)
    return float(min(MAX_PRIOR, disk_cover * (1.0 / s - 1.0) / (1.0 - disk_cover)))


def disk_cover(picks_per_px2: float, diameter: float) -> float:
    """Share of a micrograph's pixels that label disks cover at ``picks_per_px2`` picks per ORIGINAL px² (the same
    share after binning)."""
    return float(picks_per_px2 * np.pi * (LABEL_RADIUS_FRACTION * diameter / 2.0) ** 2)


def trainable(mask: np.ndarray) -> np.ndarray:
    """Pixels of a label mask that carry a training target: labeled (0 or 1) or unpicked (positive-unlabeled)."""
    return (mask >= 0) | (mask == UNPICKED)


def disk_offsets(radius: float) -> np.ndarray:
    """(K, 2) integer (dy, dx) offsets covering a disk of ``radius`` plus one pixel of slack."""
    r = int(np.ceil(radius)) + 1
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.stack([dy.ravel(), dx.ravel()], axis=1)


def circle_mask(shape: tuple[int, int], xy: np.ndarray, radius: float) -> np.ndarray:
    """Filled circles of ``radius`` px around each centre.

    Args:
        shape: (H, W) of the mask.
        xy: (N, 2) centres (x, y) in the mask's pixels; sub-pixel positions are honoured.
        radius: circle radius in pixels; a pixel is inside when its centre is within ``radius``.

    Returns:
        (H, W) int8 mask with 1 inside any circle and 0 elsewhere.
    """
    h, w = shape
    mask = np.zeros((h, w), dtype=np.int8)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return mask
    off = disk_offsets(radius)  # (K, 2)
    base = np.round(xy[:, ::-1]).astype(np.int64)  # (N, 2) as (row, col)
    pos = base[:, None, :] + off[None, :, :]  # (N, K, 2)
    d2 = ((pos - xy[:, None, ::-1]) ** 2).sum(-1)
    keep = (d2 <= radius**2) & (pos[..., 0] >= 0) & (pos[..., 0] < h) & (pos[..., 1] >= 0) & (pos[..., 1] < w)
    rows, cols = pos[keep][:, 0], pos[keep][:, 1]
    mask[rows, cols] = 1
    return mask


def pseudo_label_mask(prob: np.ndarray, positive: float = 0.95, negative: float = 0.05) -> np.ndarray:
    """Self-training targets from a heatmap: p > positive -> 1, p < negative -> 0, else ignore.

    Args:
        prob: (H, W) particle probabilities in [0, 1].

    Returns:
        (H, W) int8 mask in {-1, 0, 1}.
    """
    if not 0.0 <= negative < positive <= 1.0:
        raise ValueError(f"need 0 <= negative < positive <= 1, got {negative}, {positive}")
    mask = np.full(prob.shape, IGNORE, dtype=np.int8)
    mask[prob > positive] = 1
    mask[prob < negative] = 0
    return mask


def mask_coverage(mask: np.ndarray) -> dict[str, float]:
    """Share of pixels that are particle / background / ignored."""
    n = max(mask.size, 1)
    return {
        "positive": float((mask == 1).sum() / n),
        "negative": float((mask == 0).sum() / n),
        "ignored": float((mask == IGNORE).sum() / n),
    }
