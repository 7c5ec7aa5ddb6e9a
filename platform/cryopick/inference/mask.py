"""Outlier-region mask: drop picks on carbon, thick ice and other areas unlike the rest of the image.

A picker trained on particles in thin ice often fires on carbon edges, thick-ice patches and
contamination, which look nothing like the bulk of the micrograph. The mask compares each
region's local statistics (mean and standard deviation over a window a few particle diameters
wide) with the micrograph's median, in robust sigmas (1.4826 x median absolute deviation), and
flags regions beyond ``max_sigma``. Picks whose centre falls in a flagged region are dropped.

The statistics are computed on the binned, normalised network input (:class:`Binned`), so the
mask costs a few uniform filters on a ~512² image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage

from cryopick.errors import CryopickError
from cryopick.preprocessing.binning import Binned

MAX_FRACTION = 0.5


@dataclass
class MaskConfig:
    """Settings of the outlier-region mask (off unless ``enabled``)."""

    RETIRED: ClassVar[dict[str, str]] = {
        "use_std": "was removed: texture (local std) is always compared as well as brightness",
        "max_fraction": f"was removed: the mask never flags more than {MAX_FRACTION:g} of the image",
        "dilate": "was removed: flagged regions are not grown (chosen on the EMPIAR dev micrographs)",
    }

    enabled: bool = False
    window: float = 3.0  # window edge in particle diameters
    max_sigma: float = 5.0  # flag regions whose local mean or std is this many robust sigmas off the median

    def validate(self, where: str = "mask") -> None:
        for key in ("window", "max_sigma"):
            if not getattr(self, key) > 0:
                raise CryopickError(f"{where}.{key} must be positive, got {getattr(self, key)!r}")


def robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 * MAD); MAD of zero falls back to the standard deviation."""
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    scale = mad if mad > 1e-12 else float(values.std())
    if scale <= 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - med) / scale).astype(np.float32)


def outlier_mask(image: np.ndarray, window_px: float, cfg: MaskConfig, dilate_px: float = 0.0,
                 max_fraction: float = MAX_FRACTION) -> np.ndarray:
    """Boolean (h, w) mask, True where the region is an outlier (carbon, thick ice, ...).

    Args:
        image: (h, w) float image (the binned micrograph).
        window_px: window edge in pixels of ``image``.
        cfg: thresholds.
        dilate_px: grow the flagged regions by this radius, pixels of ``image``.
        max_fraction: never flag more than this share of the image (the median must be "the ice").
    """
    img = image.astype(np.float32, copy=False)
    size = max(3, int(round(window_px)) | 1)  # odd, so the window is centred
    mean = ndimage.uniform_filter(img, size=size, mode="reflect")
    mean_sq = ndimage.uniform_filter(img * img, size=size, mode="reflect")
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    score = np.maximum(np.abs(robust_z(mean)), np.abs(robust_z(std)))  # brightness or texture far off
    flagged = score > cfg.max_sigma
    # the median is only "the ice" when the ice dominates: cap the flagged share at max_fraction
    limit = int(max_fraction * flagged.size)
    if flagged.sum() > limit:
        cutoff = np.partition(score.ravel(), flagged.size - limit - 1)[flagged.size - limit - 1]
        flagged = score > max(cutoff, cfg.max_sigma)
    if dilate_px >= 1 and flagged.any():
        r = int(round(dilate_px))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        flagged = ndimage.binary_dilation(flagged, structure=(xx**2 + yy**2) <= r * r)
    return flagged


def micrograph_mask(binned: Binned, diameter: float, cfg: MaskConfig, dilate: float = 0.0) -> np.ndarray:
    """Outlier mask on the binned grid of ``binned`` for particles of ``diameter`` ORIGINAL px.

    ``dilate`` grows flagged regions by that many diameters (0 in the product; benchmarks sweep it).
    """
    d_binned = diameter / binned.mean_scale
    return outlier_mask(binned.image, cfg.window * d_binned, cfg, dilate * d_binned)


def picks_outside(mask: np.ndarray, binned: Binned, xy: np.ndarray) -> np.ndarray:
    """(N,) bool: True for picks (ORIGINAL px, (N, 2) x, y) whose centre is NOT in the flagged mask."""
    if len(xy) == 0:
        return np.zeros(0, dtype=bool)
    b = np.rint(binned.to_binned(xy)).astype(np.int64)
    h, w = mask.shape
    col = np.clip(b[:, 0], 0, w - 1)
    row = np.clip(b[:, 1], 0, h - 1)
    return ~mask[row, col]


def apply_mask(
    binned: Binned, xy: np.ndarray, scores: np.ndarray, diameter: float, cfg: MaskConfig
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Drop picks in outlier regions.

    Returns:
        xy: (M, 2) kept picks, ORIGINAL px; scores: (M,); removed: N - M;
        flagged_fraction: share of the micrograph's area the mask flagged.
    """
    if not cfg.enabled:
        return xy, scores, 0, 0.0
    mask = micrograph_mask(binned, diameter, cfg)
    keep = picks_outside(mask, binned, xy)
    return xy[keep], scores[keep], int((~keep).sum()), float(mask.mean())
