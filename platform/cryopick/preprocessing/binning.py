"""Micrograph preprocessing: Fourier-crop binning and robust normalisation.

Binning is by Fourier cropping, which keeps the sampling origin at pixel 0: sample ``j`` of the
binned image lies at original coordinate ``j * scale`` exactly. :class:`Binned` carries that
scale so coordinates can always go back to the ORIGINAL micrograph's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.fft

from cryopick.config import PreprocessConfig
from cryopick.errors import CryopickError


@dataclass(frozen=True)
class Binned:
    """A preprocessed micrograph and its geometry.

    Attributes:
        image: (h, w) float32 network input.
        scale: (sy, sx) original pixels per binned pixel along rows and columns.
        original_shape: (H, W) of the micrograph as read.
    """

    image: np.ndarray
    scale: tuple[float, float]
    original_shape: tuple[int, int]

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) binned (x, y) -> original pixels."""
        return np.asarray(xy, dtype=np.float64) * np.array([self.scale[1], self.scale[0]])

    def to_binned(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) original (x, y) -> binned pixels."""
        return np.asarray(xy, dtype=np.float64) / np.array([self.scale[1], self.scale[0]])

    @property
    def mean_scale(self) -> float:
        return float(np.sqrt(self.scale[0] * self.scale[1]))


def fourier_crop(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Downsample (H, W) -> out_shape by keeping the lowest spatial frequencies.

    Equivalent to an ideal low-pass then subsampling; no aliasing, unlike strided binning.
    """
    h, w = image.shape
    oh, ow = out_shape
    if (oh, ow) == (h, w):
        return image.astype(np.float32, copy=True)
    if oh > h or ow > w:
        raise ValueError(f"fourier_crop cannot upsample {image.shape} -> {out_shape}")
    spec = scipy.fft.rfft2(image.astype(np.float32), workers=-1)
    half = oh // 2
    rows = np.concatenate([np.arange(0, oh - half), np.arange(h - half, h)])
    cropped = spec[rows, : ow // 2 + 1]
    out = scipy.fft.irfft2(cropped, s=(oh, ow), workers=-1)
    return (out * (oh * ow) / (h * w)).astype(np.float32)


def resolve_binning(cfg: PreprocessConfig, diameter: float) -> PreprocessConfig:
    """``cfg`` with a concrete ``bin``: by default ``diameter / target_diameter`` (never below 1).

    Binning follows the particle so that every protein reaches the network at about the same size
    in pixels: a 180-px particle on a 4k detector and a 27-px one on a 1k image both become
    ``target_diameter`` px. An explicit ``bin`` or ``target_pixel_size`` is kept as given. The
    resolved value is what a model stores, so picking bins exactly as training did.
    """
    if cfg.bin is not None or cfg.target_pixel_size is not None:
        return cfg
    return replace(cfg, bin=round(max(1.0, diameter / cfg.target_diameter), 3))


def binned_diameter(cfg: PreprocessConfig, diameter: float, pixel_size: float | None) -> float:
    """The particle diameter in binned pixels."""
    return diameter / bin_factor(cfg, pixel_size)


def bin_factor(cfg: PreprocessConfig, pixel_size: float | None) -> float:
    """The binning factor: from the target pixel size when set, else ``cfg.bin``."""
    if cfg.target_pixel_size is None:
        if cfg.bin is None:
            raise CryopickError("preprocess.bin is not resolved: call resolve_binning() with the particle diameter first")
        return max(1.0, cfg.bin)
    if pixel_size is None:
        raise CryopickError("preprocess.target_pixel_size needs the micrograph's pixel size (header or --pixel-size)")
    return max(1.0, cfg.target_pixel_size / pixel_size)


CLIP_SIGMA = 4.0  # robust sigmas: hot pixels and carbon edges are clipped before normalising


def normalize(image: np.ndarray, clip_sigma: float | None = CLIP_SIGMA) -> np.ndarray:
    """Zero mean, unit std; optionally clip outliers first at median +- clip_sigma robust sigmas.

    The clip uses the median and MAD, not mean and std, so a few hot pixels (which inflate the
    std) cannot squash the rest of the micrograph towards zero.
    """
    image = image.astype(np.float32, copy=True)
    if clip_sigma is not None:
        med = float(np.median(image))
        spread = 1.4826 * float(np.median(np.abs(image - med))) or float(image.std())
        np.clip(image, med - clip_sigma * spread, med + clip_sigma * spread, out=image)
    mean, std = float(image.mean()), float(image.std())
    if std == 0:
        raise CryopickError("micrograph has zero variance after preprocessing")
    image -= mean
    image /= std
    return image


def preprocess(image: np.ndarray, cfg: PreprocessConfig, pixel_size: float | None = None) -> Binned:
    """Raw (H, W) micrograph -> :class:`Binned` network input (binned, then normalised)."""
    factor = bin_factor(cfg, pixel_size)
    h, w = image.shape
    out_shape = (max(16, int(round(h / factor))), max(16, int(round(w / factor))))
    small = fourier_crop(image, out_shape)
    small = normalize(small, CLIP_SIGMA)
    return Binned(image=small, scale=(h / out_shape[0], w / out_shape[1]), original_shape=(h, w))
