"""Synthetic micrographs with particles at known centres, for demos and tests.

Each particle is a randomly rotated cluster of Gaussian blobs (a crude projection of a
multi-subunit complex) seen darker than the ice; the ice has a thickness gradient and smooth
variations; noise is Gaussian, band-limited like a low-dose image after motion correction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import scipy.fft
from scipy import ndimage

from cryopick.io.atomic import write_text_atomic
from cryopick.io.coords import write_coords
from cryopick.io.micrograph import write_mrc


@dataclass(frozen=True)
class SimSpec:
    """Synthetic data set parameters (pixels unless noted)."""

    size: int = 512  # width (columns)
    height: int | None = None  # rows; None = square
    diameter: float = 24.0
    particles: int = 120
    snr: float = 0.6  # particle contrast / noise std after band-limiting
    pixel_size: float = 4.0  # Å/px written to the header
    seed: int = 0


DETECTORS = {"k2": (3838, 3710), "k3": (5760, 4092), "falcon4": (4096, 4096)}  # (width, height) px


def parse_size(text: str) -> tuple[int, int]:
    """``512``, ``5760x4092`` (width x height) or a detector name (k2, k3, falcon4) -> (width, height)."""
    t = str(text).strip().lower()
    if t in DETECTORS:
        return DETECTORS[t]
    parts = t.split("x")
    try:
        w, h = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        w = h = 0
    if w < 64 or h < 64:
        raise ValueError(f"size {text!r}: give N, WxH (at least 64 px) or one of {', '.join(DETECTORS)}")
    return w, h


def place_centres(rng: np.random.Generator, size: int | tuple[int, int], n: int, min_dist: float, margin: float) -> np.ndarray:
    """Up to ``n`` uniformly random centres at least ``min_dist`` apart (rejection sampling).

    ``size`` is the edge of a square or (width, height).
    """
    high = np.array([size, size] if np.isscalar(size) else size, dtype=np.float64) - margin
    pts: list[np.ndarray] = []
    tries = 0
    while len(pts) < n and tries < n * 50:
        tries += 1
        p = rng.uniform(margin, high, size=2)
        if all(np.hypot(*(p - q)) >= min_dist for q in pts[-400:]) and all(
            np.hypot(*(p - q)) >= min_dist for q in pts[:-400]
        ):
            pts.append(p)
    return np.array(pts).reshape(-1, 2)


def particle_image(shape: tuple[int, int], centres: np.ndarray, diameter: float, rng: np.random.Generator) -> np.ndarray:
    """Sum of rotated 4-lobed blobs (tetramer-like) at ``centres``; ``shape`` (H, W) float32."""
    img = np.zeros(shape, dtype=np.float32)
    height, width = shape
    lobe = diameter / 4.5
    r = int(np.ceil(diameter))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    for cx, cy in centres:
        theta = rng.uniform(0, 2 * np.pi)
        stamp = np.exp(-(xx**2 + yy**2) / (2 * (diameter / 3.2) ** 2)) * 0.5
        for k in range(4):
            a = theta + k * np.pi / 2
            ox, oy = np.cos(a) * diameter / 4.5, np.sin(a) * diameter / 4.5
            fx, fy = cx - np.floor(cx), cy - np.floor(cy)
            stamp += np.exp(-((xx - ox - fx) ** 2 + (yy - oy - fy) ** 2) / (2 * lobe**2))
        x0, y0 = int(np.floor(cx)) - r, int(np.floor(cy)) - r
        ys, xs = slice(max(0, y0), min(height, y0 + 2 * r + 1)), slice(max(0, x0), min(width, x0 + 2 * r + 1))
        img[ys, xs] += stamp[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return img


def simulate_micrograph(spec: SimSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One micrograph and its true centres.

    Returns:
        image: (height, size) float32.
        xy: (N, 2) float64 true centres (x, y).
    """
    rng = np.random.default_rng(seed)
    w, h = spec.size, spec.height or spec.size
    xy = place_centres(rng, (w, h), spec.particles, 0.9 * spec.diameter, spec.diameter / 2)
    signal = particle_image((h, w), xy, spec.diameter, rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    gx, gy = rng.normal(0, 1.0, 2)
    ice = gx * xx + gy * yy + smooth(rng.normal(0, 1, (h, w)).astype(np.float32), max(h, w) / 8) * 20
    noise = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)).astype(np.float32), 1.0)
    noise /= noise.std()
    image = 100.0 + 5.0 * ice - signal * spec.snr * 5.0 + noise * 5.0
    return image.astype(np.float32), xy


def smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of ``field`` (periodic), in Fourier space: fast at any sigma and size."""
    spec = ndimage.fourier_gaussian(scipy.fft.rfft2(field, workers=-1), sigma, n=field.shape[1], axis=0)
    return scipy.fft.irfft2(spec, s=field.shape, workers=-1).astype(np.float32)


class SimSplit(TypedDict):
    """``split.json`` of a simulated data set: micrograph stems per split, diameter (px), pixel size (Å)."""

    labeled: list[str]
    unlabeled: list[str]
    test: list[str]
    diameter: float
    pixel_size: float


def simulate_dataset(out: str | Path, n_micrographs: int = 8, spec: SimSpec | None = None,
                     n_labeled: int | None = None) -> SimSplit:
    """Write ``out/micrographs/*.mrc``, ``out/coords/*.star`` and ``out/split.json``.

    The split mirrors the shared EMPIAR set: a quarter labeled (or ``n_labeled``), a quarter test, the rest unlabeled.
    """
    spec = spec or SimSpec()
    out = Path(out)
    names = [f"sim_{i:04d}" for i in range(n_micrographs)]
    for i, name in enumerate(names):
        image, xy = simulate_micrograph(spec, spec.seed * 100_003 + i)
        write_mrc(out / "micrographs" / f"{name}.mrc", image, spec.pixel_size)
        write_coords(out / "coords" / f"{name}.star", xy)
    n_lab = n_labeled if n_labeled is not None else max(1, n_micrographs // 4)
    n_test = max(1, n_micrographs // 4)
    split: SimSplit = {
        "labeled": names[:n_lab],
        "unlabeled": names[n_lab : n_micrographs - n_test],
        "test": names[n_micrographs - n_test :],
        "diameter": spec.diameter,
        "pixel_size": spec.pixel_size,
    }
    write_text_atomic(out / "split.json", json.dumps(split, indent=1))
    return split
