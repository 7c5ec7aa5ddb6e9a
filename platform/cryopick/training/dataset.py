"""Labeled micrographs -> training and validation items (preprocessed images + masks).

A :class:`TrainItem` is what patches are cut from; a :class:`ValItem` is what the picker is
scored on while training. Without separate validation micrographs, the bottom
``val_fraction`` of every labeled micrograph is held back: its labels are set to ignore for
training and its picks are used for scoring, so even one labeled micrograph gets a validation.
A micrograph labeled in regions only holds back the bottom ``val_fraction`` of each region.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryopick.config import PreprocessConfig
from cryopick.errors import CryopickError
from cryopick.io.coords import Box, check_inside, drop_duplicate_picks, duplicate_distance, find_coords_file, read_coords
from cryopick.io.micrograph import read_micrograph
from cryopick.preprocessing.labels import HELD, IGNORE, LABEL_RADIUS_FRACTION, UNPICKED, circle_mask
from cryopick.preprocessing.binning import Binned, preprocess, resolve_binning


@dataclass
class TrainItem:
    """One micrograph to cut training patches from.

    Attributes:
        name: micrograph stem.
        image: (h, w) float32 preprocessed micrograph.
        mask: (h, w) int8 targets in {-1, 0, 1}.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray


@dataclass
class ValItem:
    """One micrograph (or part of one) to score picks on.

    Attributes:
        image: (h, w) float32 preprocessed micrograph.
        true_xy: (M, 2) expert centres in binned pixels.
        rows: (r0, r1) binned rows that are scored; picks and truth outside are ignored.
        scale: original px per binned px (to report distances in original pixels).
        original_shape: (H, W) of the micrograph as read.
        cols: (c0, c1) binned columns that are scored (None: all).
    """

    name: str
    image: np.ndarray
    true_xy: np.ndarray
    rows: tuple[int, int]
    scale: float
    original_shape: tuple[int, int]
    cols: tuple[int, int] | None = None


@dataclass
class LabeledMicrograph:
    """A preprocessed micrograph with its expert picks (binned pixels)."""

    name: str
    binned: Binned
    xy: np.ndarray  # (N, 2) in binned pixels


def coords_for(mic: Path, coords_dir: Path) -> Path:
    """The coordinate file matching ``mic`` by stem, or a clear error."""
    found = find_coords_file(coords_dir, mic.stem)
    if found is None:
        raise CryopickError(f"no coordinate file for micrograph {mic.name} (looked for {mic.stem}.star/.box/.csv/.txt)", coords_dir)
    return found


def load_labeled(
    mic: Path, coords_dir: Path, diameter: float, pre: PreprocessConfig, pixel_size: float | None = None
) -> LabeledMicrograph:
    """Read, check and preprocess one micrograph and its expert picks (binned by ``pre``, resolved for ``diameter``)."""
    pre = resolve_binning(pre, diameter)
    m = read_micrograph(mic, pixel_size)
    if diameter >= min(m.shape):
        raise CryopickError(f"particle diameter {diameter:g} px is larger than the {m.shape[1]}x{m.shape[0]} micrograph", mic)
    cpath = coords_for(mic, coords_dir)
    xy, _ = read_coords(cpath)
    if len(xy) == 0:
        raise CryopickError("coordinate file is empty: a labeled micrograph needs picks", cpath)
    check_inside(xy, m.shape, cpath)
    xy, dropped = drop_duplicate_picks(xy, diameter)
    if dropped:  # double-counted truth would mark real picks false and bias the stored threshold
        print(f"cryopick: warning: {cpath}: {dropped} duplicate pick(s) closer than {duplicate_distance(diameter):.1f} px "
              "to another were removed", file=sys.stderr)
    b = preprocess(m.data, pre, m.pixel_size)
    return LabeledMicrograph(name=m.name, binned=b, xy=b.to_binned(xy))


def label_radius(diameter: float, scale: float, fraction: float = LABEL_RADIUS_FRACTION) -> float:
    """Circle radius in binned pixels: ``fraction`` of the particle radius."""
    return max(1.0, fraction * diameter / 2.0 / scale)


def hold_rows(height: int, val_fraction: float) -> tuple[int, int]:
    """Binned rows held back for validation: the bottom ``val_fraction`` of the image."""
    return int(round(height * (1.0 - val_fraction))), height


Strip = tuple[tuple[int, int], tuple[int, int]]  # (r0, r1), (c0, c1) binned


def box_on_grid(box: Box, scale: tuple[float, float]) -> Strip:
    """The binned pixels wholly inside ``box``: ((r0, r1), (c0, c1))."""
    x0, y0, x1, y1 = box
    sy, sx = scale
    return (int(np.ceil(y0 / sy)), int(np.floor(y1 / sy))), (int(np.ceil(x0 / sx)), int(np.floor(x1 / sx)))


def held_strip(shape: tuple[int, int], scale: tuple[float, float], val_fraction: float, box: Box | None = None) -> Strip:
    """The binned strip held back for validation: the bottom ``val_fraction`` of the micrograph's rows, or of ``box``'s
    rows within its columns (a micrograph labeled in regions only)."""
    if box is None:
        return hold_rows(shape[0], val_fraction), (0, shape[1])
    (r0, r1), cols = box_on_grid(box, scale)
    return (int(round(r1 - (r1 - r0) * val_fraction)), r1), cols


def make_train_item(lm: LabeledMicrograph, radius: float, held: Sequence[Strip] = (),
                    regions: Sequence[Box] | None = None, sparse: bool = False, positive_unlabeled: bool = False) -> TrainItem:
    """Circle mask for ``lm``; the ``held`` strips are held back for validation (never a target).

    ``regions``: boxes (x0, y0, x1, y1) in ORIGINAL px that were labeled completely; everything outside
    them is ignored, so the particles nobody picked there are not taught as background.
    ``sparse``: the picks are some of the particles, so unpicked pixels are ignored (left to a teacher), not
    background; with ``positive_unlabeled`` they are :data:`UNPICKED` (a particle with the loss's prior, else
    background).
    """
    mask = circle_mask(lm.binned.image.shape, lm.xy, radius)
    if sparse:
        mask[mask == 0] = UNPICKED if positive_unlabeled else IGNORE
    if regions is not None:
        inside = np.zeros(mask.shape, dtype=bool)
        for box in regions:
            (r0, r1), (c0, c1) = box_on_grid(box, lm.binned.scale)
            inside[r0:r1, c0:c1] = True
        mask[~inside] = IGNORE
    for (r0, r1), (c0, c1) in held:
        mask[r0:r1, c0:c1] = HELD
    return TrainItem(name=lm.name, image=lm.binned.image, mask=mask)


def make_val_item(lm: LabeledMicrograph, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> ValItem:
    """``lm`` scored inside ``rows`` x ``cols`` (binned; None: all)."""
    h = lm.binned.image.shape[0]
    return ValItem(name=lm.name, image=lm.binned.image, true_xy=lm.xy, rows=rows or (0, h), scale=lm.binned.mean_scale,
                   original_shape=lm.binned.original_shape, cols=cols)


def split_items(
    labeled: list[LabeledMicrograph],
    val: list[LabeledMicrograph],
    diameter: float,
    val_fraction: float,
    positive_unlabeled: bool = False,
) -> tuple[list[TrainItem], list[ValItem]]:
    """Training and validation items; hold back each labeled micrograph's bottom rows if no ``val``.

    ``positive_unlabeled``: the picks are sparse and the unpicked pixels are taught as positive-unlabeled
    (:func:`make_train_item`); otherwise they are background.
    """
    train_items: list[TrainItem] = []
    val_items = [make_val_item(v) for v in val]
    pu = positive_unlabeled
    for lm in labeled:
        r = label_radius(diameter, lm.binned.mean_scale)
        if val or val_fraction <= 0:
            train_items.append(make_train_item(lm, r, sparse=pu, positive_unlabeled=pu))
            continue
        rows = hold_rows(lm.binned.image.shape[0], val_fraction)
        train_items.append(make_train_item(lm, r, held=[(rows, (0, lm.binned.image.shape[1]))], sparse=pu, positive_unlabeled=pu))
        val_items.append(make_val_item(lm, rows=rows))
    return train_items, val_items
