"""Random training patches with flips and 90-degree rotations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage

from cryopick.config import PreprocessConfig, TrainConfig
from cryopick.preprocessing.binning import binned_diameter, resolve_binning
from cryopick.preprocessing.labels import IGNORE, trainable
from cryopick.training.dataset import TrainItem

PATCH_DIAMETERS = 7.0  # default patch edge in particle diameters: several particles and their surroundings
PATCH_LIMITS = (64, 256)  # binned px; the bounds of the default patch edge


def patch_size_for(diameter_binned: float, multiple: int = 16) -> int:
    """Default patch edge (binned px) for a particle of ``diameter_binned`` px: the nearest multiple of ``multiple``."""
    size = int(round(PATCH_DIAMETERS * diameter_binned / multiple)) * multiple
    lo, hi = PATCH_LIMITS
    return int(min(max(size, -(-lo // multiple) * multiple), hi // multiple * multiple))


def resolve_geometry(
    pre: PreprocessConfig, train: TrainConfig, diameter: float, pixel_size: float | None, multiple: int = 16
) -> tuple[PreprocessConfig, TrainConfig]:
    """Binning and patch edge made concrete for a particle of ``diameter`` original px.

    ``pixel_size`` (Å/px) is needed only when binning to a target pixel size. Explicit values stay.
    """
    pre = resolve_binning(pre, diameter)
    if train.patch_size is None:
        train = replace(train, patch_size=patch_size_for(binned_diameter(pre, diameter, pixel_size), multiple))
    return pre, train


def _pad_to(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad items smaller than a patch: image by reflection, mask with ignore."""
    ph, pw = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if not (ph or pw):
        return image, mask
    image = np.pad(image, ((0, ph), (0, pw)), mode="reflect" if ph < image.shape[0] and pw < image.shape[1] else "edge")
    mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
    return image, mask


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 dihedral transforms, applied to image and mask alike."""
    k = int(rng.integers(4))
    image, mask = np.rot90(image, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return image, mask


def jitter_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast/brightness jitter, Gaussian blur or extra noise (nnU-Net-style intensity augmentation).

    The image is normalised (mean 0, std 1), so the ranges are in units of its standard deviation.
    """
    image = image * rng.uniform(0.75, 1.25) + rng.normal(0.0, 0.1)
    if rng.random() < 0.2:
        image = ndimage.gaussian_filter(image, rng.uniform(0.5, 1.0))
    if rng.random() < 0.2:
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.3), image.shape)
    return image


def sample_patches(
    items: Sequence[TrainItem], n: int, size: int, rng: np.random.Generator, augment_patches: bool = True,
    intensity: float = 0.0, weighted: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random patches, micrographs chosen in proportion to their labeled area (``weighted``) or to their area.

    A patch with no labeled pixel (outside a micrograph's labeled regions, or inside its held-back strip) is drawn
    again around a random labeled pixel, so region labels are not diluted by empty patches; a micrograph labeled
    whole is sampled as before, apart from the rare patch inside its strip. Items with no labeled pixel at all
    (unlabeled micrographs, whose targets the teacher gives) are sampled uniformly.

    Returns:
        images: (n, 1, size, size) float32.
        masks: (n, 1, size, size) int8, values as the items' masks.
    """
    weights = np.array([float(trainable(it.mask).sum() if weighted else it.mask.size) for it in items])
    if weights.sum() == 0:
        raise ValueError("no labeled pixels to train on")
    weights /= weights.sum()
    images = np.empty((n, 1, size, size), dtype=np.float32)
    masks = np.empty((n, 1, size, size), dtype=np.int8)
    picks = rng.choice(len(items), size=n, p=weights)
    taught: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per item: (rows, cols) of its trainable pixels
    for i, j in enumerate(picks):
        image, mask = _pad_to(items[j].image, items[j].mask, size)
        y = int(rng.integers(image.shape[0] - size + 1))
        x = int(rng.integers(image.shape[1] - size + 1))
        if not trainable(mask[y : y + size, x : x + size]).any():
            if j not in taught:
                rows, cols = np.nonzero(trainable(mask))
                taught[j] = (rows, cols)
            y, x = _around(taught[j], image.shape, size, rng, (y, x))
        pi, pm = image[y : y + size, x : x + size], mask[y : y + size, x : x + size]
        if augment_patches:
            pi, pm = augment(pi, pm, rng)
        if intensity and rng.random() < intensity:
            pi = jitter_intensity(pi, rng)
        images[i, 0], masks[i, 0] = pi, pm
    return images, masks


def _around(pixels: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...], size: int, rng: np.random.Generator,
            fallback: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a ``size`` patch inside ``shape`` that holds one of ``pixels`` (rows, cols), drawn at
    random with the pixel anywhere in the patch; ``fallback`` where there is none."""
    rows, cols = pixels
    if len(rows) == 0:
        return fallback
    k = int(rng.integers(len(rows)))
    y = int(np.clip(rows[k] - rng.integers(size), 0, shape[0] - size))
    x = int(np.clip(cols[k] - rng.integers(size), 0, shape[1] - size))
    return y, x
