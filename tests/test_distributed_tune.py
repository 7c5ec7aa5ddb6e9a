"""Ray Tune finds a known best picking threshold and peak distance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cryopick.selftrain.scoring import ScoredHeatmap, score_picks

pytestmark = pytest.mark.ray


def _heatmap(rng: np.random.Generator) -> ScoredHeatmap:
    """True particles score 0.65-0.95, decoys 0.1-0.55, so only threshold 0.6 keeps all and only the truth.

    Centres are 20 px apart (diameter 16): a peak distance of 2 diameters merges neighbours and
    loses recall, so the best distance is one of the small ones.
    """
    g = np.arange(12.0, 190.0, 20.0)
    true_xy = np.array([(x, y) for y in g for x in g])
    decoy_xy = true_xy[::3] + 10.0
    yy, xx = np.mgrid[:200, :200]
    hm = np.zeros((200, 200), np.float32)
    for (x, y), v in zip(np.vstack([true_xy, decoy_xy]),
                         np.r_[rng.uniform(0.65, 0.95, len(true_xy)), rng.uniform(0.1, 0.55, len(decoy_xy))]):
        hm = np.maximum(hm, v * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2)))
    # scores are read on the smoothed heatmap, so give the blobs a flat top at their value
    return ScoredHeatmap("synthetic", np.clip(hm * 1.6, 0, None) / 1.6, (1.0, 1.0), true_xy, (0, 200))


@pytest.mark.timeout(180)
def test_tune_finds_the_known_best_threshold(ray_session: Any, tmp_path: Path) -> None:
    from cryopick.distributed.tune import tune_picking

    items = [_heatmap(np.random.default_rng(s)) for s in (0, 1)]
    # ground truth by brute force over the same grid, with the same plain F1
    thresholds, fractions = [0.2, 0.4, 0.6, 0.8], [0.5, 2.0]
    grid = {(t, f): score_picks(items, t, f * 16.0, 16.0, smooth_sigma=0.0)["f1"] for t in thresholds for f in fractions}
    best_t, best_f = max(grid, key=lambda k: (grid[k], k[0]))
    assert best_t == 0.6 and grid[(0.6, 0.5)] == pytest.approx(1.0)  # the planted optimum
    best, trials = tune_picking(items, 16.0, thresholds, fractions, smooth_sigma=0.0, cpu_per_trial=0.5,
                                storage_path=str(tmp_path), name="tune-test")
    assert len(trials) == 8
    assert best["threshold"] == 0.6 and best["min_distance"] == pytest.approx(8.0)
    assert best["f1"] == pytest.approx(1.0) and best["precision"] == pytest.approx(1.0)
    by_setting = {(t["threshold"], t["min_distance"] / 16.0): t["f1"] for t in trials}
    for key, f1 in grid.items():  # every trial reports exactly the plain metric
        assert by_setting[key] == pytest.approx(f1)


@pytest.mark.timeout(180)
def test_tune_model_on_a_trained_picker(ray_session: Any, sim_data: Path, tmp_path: Path) -> None:
    """The pipelines/tune.py path: predict validation micrographs with an actor pool, then Tune."""
    from cryopick.config import ModelConfig, PreprocessConfig, TrainConfig
    from cryopick.distributed.tune import tune_model
    from cryopick.io.coords import read_coords
    from cryopick.training.run import train_from_files

    mics = sorted((sim_data / "micrographs").glob("*.mrc"))
    train_from_files(mics[:2], sim_data / "coords", 24.0, tmp_path / "model", PreprocessConfig(bin=2.0),
                     ModelConfig(base_width=8, depth=3), TrainConfig(steps=60, batch_size=8, patch_size=64, val_every=30),
                     progress=False)
    truth = {m.stem: read_coords(sim_data / "coords" / f"{m.stem}.star")[0] for m in mics[2:]}
    best, trials = tune_model(tmp_path / "model", mics[2:], truth, tmp_path / "tune", [0.3, 0.5, 0.7], [0.5, 1.0],
                              progress=False)
    assert len(trials) == 6 and sorted((tmp_path / "tune" / "heatmaps").glob("*.npz"))
    assert best["f1"] == max(t["f1"] for t in trials) and best["f1"] > 0.3
