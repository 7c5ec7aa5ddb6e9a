"""Training patches: geometry shared by image and mask, intensity jitter on the image only."""

from __future__ import annotations

import numpy as np
import pytest

from cryopick.config import TrainConfig, from_dict
from cryopick.training.dataset import TrainItem
from cryopick.errors import CryopickError
from cryopick.training.patches import jitter_intensity, sample_patches


def _item(seed: int = 0, size: int = 96) -> TrainItem:
    """An item whose image is its mask as float, so patches show whether both were moved alike."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.array([-1, 0, 1], np.int8), size=(size // 6, size // 6), p=[0.2, 0.6, 0.2])
    mask = np.kron(cells, np.ones((6, 6), np.int8))  # 6-px blocks: blur of sigma <= 1 keeps their shape
    return TrainItem("m", mask.astype(np.float32), mask)


def test_patches_move_image_and_mask_alike() -> None:
    images, masks = sample_patches([_item()], 64, 32, np.random.default_rng(1))
    assert images.shape == (64, 1, 32, 32) and images.dtype == np.float32 and masks.dtype == np.int8
    np.testing.assert_array_equal(images, masks.astype(np.float32))
    src = _item().mask
    crops = {src[y : y + 32, x : x + 32].tobytes() for y in range(65) for x in range(65)}
    views = lambda m: [np.ascontiguousarray(np.rot90(f, k)) for f in (m, m[:, ::-1]) for k in range(4)]  # noqa: E731
    # every patch is a dihedral view of a crop; some are not the crop itself (turned or flipped)
    assert all(any(v.tobytes() in crops for v in views(m[0])) for m in masks)
    assert sum(m[0].tobytes() not in crops for m in masks) > 16
    plain, _ = sample_patches([_item()], 64, 32, np.random.default_rng(1), augment_patches=False)
    assert all(p[0].astype(np.int8).tobytes() in crops for p in plain)


def test_patches_outside_labeled_regions_are_drawn_again() -> None:
    """A micrograph labeled in one small region: every patch holds some of it, at varying places in the patch."""
    mask = np.full((300, 300), -1, np.int8)
    mask[100:140, 200:240] = 0
    mask[110:116, 210:216] = 1
    item = TrainItem("m", mask.astype(np.float32), mask)
    _, masks = sample_patches([item], 200, 48, np.random.default_rng(4), augment_patches=False)
    assert all((m >= 0).any() for m in masks)  # drawn uniformly, only about 12 % would
    first = [np.argwhere(m[0] >= 0)[0] for m in masks]  # where the region starts in each patch
    assert np.std([r for r, _ in first]) > 5 and np.std([c for _, c in first]) > 5


def test_whole_micrograph_patches_are_drawn_uniformly() -> None:
    """Where every patch holds labeled pixels, the corners are the plain uniform draws (nothing is redrawn)."""
    item = _item(size=96)
    item.mask[item.mask < 0] = 0
    _, masks = sample_patches([item], 20, 32, np.random.default_rng(5), augment_patches=False)
    rng = np.random.default_rng(5)
    rng.choice(1, size=20, p=[1.0])
    for m in masks:
        y, x = int(rng.integers(65)), int(rng.integers(65))
        assert np.array_equal(m[0], item.mask[y : y + 32, x : x + 32])


def test_intensity_jitter_changes_the_image_only() -> None:
    _, plain_m = sample_patches([_item()], 32, 32, np.random.default_rng(2))
    jit_i, jit_m = sample_patches([_item()], 32, 32, np.random.default_rng(2), intensity=1.0)
    # the mask follows the same geometry as before; only the image values moved
    assert _correlates_with_mask(jit_i, jit_m)
    assert all(not np.allclose(j, m.astype(np.float32)) for j, m in zip(jit_i, jit_m))
    assert np.array_equal(plain_m[0], jit_m[0])  # same first crop: positions are drawn before the jitter
    with pytest.raises(CryopickError, match="train.intensity_augment"):
        from_dict(TrainConfig, {"intensity_augment": 1.5}, "train")


def _correlates_with_mask(images: np.ndarray, masks: np.ndarray) -> bool:
    """Each jittered patch still correlates strongly with its mask (contrast, blur and noise are mild)."""
    return all(np.corrcoef(i.ravel(), m.ravel().astype(np.float64))[0, 1] > 0.6 for i, m in zip(images, masks))


def test_jitter_intensity_ranges() -> None:
    rng = np.random.default_rng(0)
    flat = np.zeros((16, 16), np.float32)
    ones = np.ones((16, 16), np.float32)
    offsets = [jitter_intensity(flat, np.random.default_rng(s)).mean() for s in range(200)]
    assert 0.05 < np.std(offsets) < 0.2  # brightness shift N(0, 0.1), plus noise means of a few patches
    gains = [jitter_intensity(ones, np.random.default_rng(s)).mean() for s in range(200)]
    # gain in [0.75, 1.25] plus the shift: mean of a constant image stays within about 0.75 - 0.4 .. 1.25 + 0.4
    assert 0.3 < min(gains) and max(gains) < 1.7 and np.std(gains) > 0.1
    a = jitter_intensity(ones, np.random.default_rng(5))
    np.testing.assert_array_equal(a, jitter_intensity(ones, np.random.default_rng(5)))  # reproducible
    assert jitter_intensity(ones, rng).shape == ones.shape
