"""The carbon-edge / thick-ice mask: on a synthetic carbon edge, alone and inside a campaign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from campaign_support import carbon_edge, train_tiny_model

from cryopick.batch.config import BatchConfig
from cryopick.batch.run import run_batch
from cryopick.config import PreprocessConfig
from cryopick.io.coords import read_coords
from cryopick.io.micrograph import write_mrc
from cryopick.inference.mask import MaskConfig, micrograph_mask, outlier_mask, picks_outside
from cryopick.preprocessing.binning import preprocess
from cryopick.simulate import SimSpec, simulate_micrograph

pytestmark = pytest.mark.timeout(120)
ON = MaskConfig(enabled=True)


def test_mask_flags_the_carbon_side_of_an_edge_and_keeps_the_ice() -> None:
    image, xy, edge = carbon_edge()
    binned = preprocess(image, PreprocessConfig(bin=2.0), 4.0)
    mask = micrograph_mask(binned, 24.0, ON)
    cols = np.arange(mask.shape[1]) * binned.scale[1]
    assert mask[:, cols > edge + 24].mean() > 0.98  # carbon
    assert mask[:, cols < edge - 72].mean() < 0.02  # ice more than 3 diameters from the edge
    keep = picks_outside(mask, binned, xy)
    assert keep[xy[:, 0] < edge - 72].mean() > 0.97  # true particles in the ice survive
    assert not keep[xy[:, 0] > edge + 24].any()  # particles under carbon are dropped
    clean, _ = simulate_micrograph(SimSpec(size=512, particles=150, seed=1), 5)
    assert micrograph_mask(preprocess(clean, PreprocessConfig(bin=2.0), 4.0), 24.0, ON).mean() < 0.03


def test_mask_never_flags_more_than_max_fraction() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (256, 256)).astype(np.float32)
    img[:, 100:] -= 6.0  # the "outlier" is now most of the image: the median sits in it
    flagged = outlier_mask(img, 15, MaskConfig(enabled=True), max_fraction=0.3)
    assert flagged.mean() <= 0.3 + 1e-6
    assert outlier_mask(img, 15, MaskConfig(enabled=True), max_fraction=1.0).mean() > 0.3


def test_mask_in_a_campaign_removes_only_picks_in_flagged_regions(sim_data: Path, tmp_path: Path) -> None:
    model = train_tiny_model(sim_data, tmp_path / "model")
    image, _, edge = carbon_edge()
    mic = tmp_path / "mics" / "carbon.mrc"
    write_mrc(mic, image, 4.0)
    plain = run_batch(model, [mic], tmp_path / "plain", BatchConfig(), "local", progress=False)
    masked = run_batch(model, [mic], tmp_path / "masked", BatchConfig(mask=ON), "local", progress=False)
    xy_all, _ = read_coords(tmp_path / "plain" / "picks" / "carbon.star")
    xy_kept, _ = read_coords(tmp_path / "masked" / "picks" / "carbon.star")
    assert masked.masked == plain.particles - masked.particles > 0
    kept = {tuple(p) for p in np.round(xy_kept, 1)}
    assert kept <= {tuple(p) for p in np.round(xy_all, 1)}  # the mask only removes
    removed = np.array([p for p in np.round(xy_all, 1) if tuple(p) not in kept])
    assert removed[:, 0].min() > edge - 24 * ON.window / 2 - 2  # only near or beyond the edge
    assert (xy_kept[:, 0] < edge + 24).all()
