"""Pseudo-labels, calibration, scoring and round outputs (plain functions, no Ray)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cryopick.distributed.data import LABELED, PSEUDO, StageParams, cut_patches, load_micrographs
from cryopick.training.dataset import hold_rows
from cryopick.preprocessing.labels import HELD, IGNORE, circle_mask, pseudo_label_mask
from cryopick.inference.peaks import find_peaks
from cryopick.selftrain.outputs import block_reduce, write_tune_csv
from cryopick.selftrain.pseudo import (
    PseudoLabeler, apply_calibration, fit_calibration, fit_peak_calibration, no_particles_note, pav, pseudo_summary,
)
from cryopick.selftrain.scoring import ScoredHeatmap, best_trial, score_and_write, score_picks


def blobs(shape: tuple[int, int], xy: np.ndarray, values: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """(H, W) heatmap with Gaussian blobs of peak ``values`` at ``xy``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    hm = np.zeros(shape, np.float32)
    for (x, y), v in zip(xy, values):
        hm = np.maximum(hm, v * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    return hm


def grid_points(n: int, step: float, offset: float) -> np.ndarray:
    g = np.arange(n) * step + offset
    return np.array([(x, y) for y in g for x in g], dtype=np.float64)


def test_pav_is_monotone_and_weighted() -> None:
    np.testing.assert_allclose(pav(np.array([0.1, 0.5, 0.3, 0.9]), np.array([1, 1, 1, 1.0])), [0.1, 0.4, 0.4, 0.9])
    np.testing.assert_allclose(pav(np.array([0.5, 0.2]), np.array([3.0, 1.0])), [0.425, 0.425])


def test_pixel_calibration_recovers_frequencies() -> None:
    rng = np.random.default_rng(0)
    hm = rng.uniform(0, 1, (200, 200)).astype(np.float32)
    truth = (rng.uniform(0, 1, hm.shape) < hm**2).astype(np.int8)  # P(particle | h) = h^2
    table = fit_calibration([hm], [truth], n_bins=10)
    assert all(b >= a for a, b in zip(table, table[1:]))
    np.testing.assert_allclose(table, ((np.arange(10) + 0.5) / 10) ** 2, atol=0.03)
    assert apply_calibration(np.array([[0.05]], np.float32), table)[0, 0] == pytest.approx(table[0], abs=1e-6)


def test_raw_pixel_rule_without_disks_is_the_issue_rule() -> None:
    hm = np.array([[0.99, 0.5, 0.01]], np.float32)
    m = PseudoLabeler(rule="plain").mask(hm, diameter=10, scale=1)
    assert m.tolist() == [[1, IGNORE, 0]]


def test_disks_replace_cores_and_balance_restores_the_share() -> None:
    xy = grid_points(4, 25.0, 12.0)
    hm = blobs((100, 100), xy, np.full(len(xy), 0.99))
    lab = PseudoLabeler(label_radius_fraction=0.5)
    m = lab.mask(hm, diameter=16, scale=1.0)
    expected = circle_mask(hm.shape, xy, 4.0)
    assert ((m == 1) == (expected == 1)).all()  # one label-radius disk per confident peak
    share = (m == 1).sum() / ((m >= 0).sum())
    balanced = PseudoLabeler(label_radius_fraction=0.5, balance_to=0.3).mask(hm, 16, 1.0)
    assert share < 0.3
    assert (balanced == 1).sum() == (m == 1).sum()
    assert (balanced == 1).sum() / (balanced >= 0).sum() == pytest.approx(0.3, abs=0.01)


def test_peak_calibration_gates_positives() -> None:
    # validation: strong peaks are all real, weak peaks (0.6) are half decoys
    true_xy = grid_points(4, 25.0, 12.0)
    decoys = true_xy[::2] + np.array([12.0, 0.0])
    hm = blobs((100, 100), np.vstack([true_xy, decoys]), np.r_[np.full(8, 0.97), np.full(8, 0.6), np.full(8, 0.6)])
    sh = ScoredHeatmap("v", hm, (1.0, 1.0), true_xy, (0, 100))
    table = fit_peak_calibration([sh], min_distance=8.0, diameter=16.0, n_bins=10)
    _, scores = find_peaks(hm, 8.0, 0.02, 1.0)
    strong, weak = scores.max(), scores.min()  # smoothed peak scores, as the table was fitted on
    np.testing.assert_allclose(apply_calibration(np.array([strong, weak], np.float32), table), [1.0, 0.5], atol=0.06)
    lab = PseudoLabeler(peak_calibration=table, calibration=[], positive=0.95)
    m = lab.mask(hm, diameter=16.0, scale=1.0)
    n_disks = len(np.unique(np.round(np.argwhere(m == 1) / 12.5), axis=0))
    assert 0 < (m == 1).sum() and n_disks <= 16  # only the 0.97 peaks became particles
    assert m[int(decoys[0, 1]), int(decoys[0, 0])] != 1


def test_a_weak_model_gets_no_particles_and_the_note_says_why() -> None:
    """The 2026-11-28 one-label case: the peak table tops out below 0.95, so nothing is a particle,
    and balancing to the expert share then leaves no background either."""
    xy = grid_points(4, 25.0, 12.0)
    hm = blobs((100, 100), xy, np.full(len(xy), 0.97))
    table = [0.0] * 40 + [0.5] * 5 + [0.92] * 5  # isotonic peak precision, at most 0.92
    weak = PseudoLabeler(peak_calibration=table, calibration=[0.0] * 50, positive=0.95, balance_to=0.034)
    m = weak.mask(hm, diameter=16.0, scale=1.0)
    assert (m == 1).sum() == 0 and (m == 0).sum() == 0  # all ignored
    note = no_particles_note(weak)
    assert "at most 0.92" in note and "> 0.95" in note and "balancing" in note and "selftrain.positive" in note
    unbalanced = PseudoLabeler(peak_calibration=table, calibration=[0.0] * 50, positive=0.95)
    assert (unbalanced.mask(hm, 16.0, 1.0) == 0).sum() > 0  # without balancing the background stays
    assert "balancing" not in no_particles_note(unbalanced)
    raw = no_particles_note(PseudoLabeler(rule="plain"))
    assert "threshold 0.95" in raw


def test_score_picks_and_outputs(tmp_path: Path) -> None:
    true_xy = grid_points(4, 25.0, 12.0)
    hm = blobs((100, 100), true_xy, np.full(len(true_xy), 0.9))
    sh = ScoredHeatmap("mic", hm, (2.0, 2.0), true_xy * 2.0, (0, 100), image=np.zeros((100, 100), np.float32))
    s = score_picks([sh], threshold=0.5, min_distance=20.0, diameter=32.0)
    assert s["f1"] == pytest.approx(1.0) and s["n_picks"] == 16
    assert score_picks([sh], threshold=0.95, min_distance=20.0, diameter=32.0)["f1"] == 0.0
    held = ScoredHeatmap("mic", hm, (2.0, 2.0), true_xy * 2.0, (50, 100))
    assert score_picks([held], 0.5, 20.0, 32.0)["n_picks"] == 8  # only the held-back rows count
    res = score_and_write(tmp_path, [sh], 0.5, 20.0, 32.0, 1.0)
    assert res.f1 == pytest.approx(1.0) and res.average_precision == pytest.approx(1.0)
    with np.load(tmp_path / "preview" / "mic.npz") as z:
        assert z["image"].dtype == np.float16 and z["picks_xy"].shape == (16, 2) and z["truth_xy"].shape == (16, 2)
        np.testing.assert_allclose(z["scale"], [2.0, 2.0])
    assert (tmp_path / "picks" / "mic.star").is_file()
    rows = list(csv.DictReader((tmp_path / "pr_curve.csv").open()))
    assert set(rows[0]) == {"threshold", "precision", "recall"}


def test_best_trial_and_tune_csv(tmp_path: Path) -> None:
    trials = [{"threshold": t, "min_distance": 10.0, "f1": f, "precision": 0.0, "recall": 0.0}
              for t, f in ((0.3, 0.5), (0.5, 0.8), (0.7, 0.8))]
    assert best_trial(trials)["threshold"] == 0.7  # ties go to the higher threshold
    near = trials + [{"threshold": 0.4, "min_distance": 10.0, "f1": 0.795, "precision": 0.0, "recall": 0.0}]
    assert best_trial(near)["threshold"] == 0.7
    assert best_trial(near, tolerance=0.01)["threshold"] == 0.4  # the lowest within tolerance transfers best
    assert best_trial(near, tolerance=0.001)["threshold"] == 0.5
    write_tune_csv(tmp_path / "tune.csv", trials)
    assert (tmp_path / "tune.csv").read_text().splitlines()[0] == "threshold,min_distance,f1,precision,recall"


def test_pseudo_summary_and_block_reduce() -> None:
    s = pseudo_summary([{"positive": 0.1, "negative": 0.5, "ignored": 0.4, "pixels": 100},
                        {"positive": 0.3, "negative": 0.3, "ignored": 0.4, "pixels": 300}])
    assert s["positive"] == pytest.approx(0.25) and s["n_micrographs"] == 2
    assert block_reduce(np.arange(16.0).reshape(4, 4), 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_data_stages_without_ray(sim_data: Path, tmp_path: Path) -> None:
    mic = sim_data / "micrographs" / "sim_0000.mrc"
    heat = tmp_path / "sim_0001.npz"
    np.savez(heat, heatmap=np.full((128, 128), 0.01, np.float16), scale=np.array([2.0, 2.0]))
    params = StageParams(diameter=24.0, preprocess={"bin": 2.0}, val_fraction=0.25,
                         pseudo={"rule": "plain"})
    batch = {"path": np.array([str(mic), str(sim_data / "micrographs" / "sim_0001.mrc")]),
             "kind": np.array([LABELED, PSEUDO]), "label": np.array([str(sim_data / "coords" / "sim_0000.star"), str(heat)]),
             "n_patches": np.array([3, 2]), "hold_back": np.array([True, False])}
    out = load_micrographs(batch, params.__dict__)
    assert out["image"].shape == (2, 128, 128) and out["mask"].dtype == np.int8
    r0, _ = hold_rows(128, 0.25)
    assert (out["mask"][0, r0:] == HELD).all() and (out["mask"][0, :r0] == 1).any()  # the held-back strip: never a target
    assert (out["mask"][1] == 0).all()  # p = 0.01 everywhere: all background
    patches = cut_patches(out, patch_size=32)
    assert patches["image"].shape == (5, 32, 32) and len(set(patches["patch_id"])) == 5
    assert list(patches["name"]).count("sim_0000") == 3
    # the intensity jitter of training reaches the Ray stage: same first crop, other image values
    a, b = cut_patches(out, patch_size=32, seed=7), cut_patches(out, patch_size=32, seed=7, intensity=1.0)
    assert np.array_equal(a["mask"][0], b["mask"][0]) and not np.allclose(a["image"][0], b["image"][0])


def test_count_matched_threshold_keeps_the_validation_pick_rate() -> None:
    from cryopick.selftrain.scoring import count_matched_threshold, picks_per_true

    assert picks_per_true({"recall": 0.9, "precision": 0.75}) == pytest.approx(1.2)
    assert picks_per_true({"recall": 0.0, "precision": 0.0}) == 1.0  # no pick matched: keep the expected count

    # 16 particles on a 200 x 200 px (scale 2 -> 400 x 400 original px) unlabeled heatmap, scores 0.3 .. 0.9
    xy = grid_points(4, 45.0, 30.0)
    hm = blobs((200, 200), xy, np.linspace(0.9, 0.3, 16))
    sh = ScoredHeatmap("u", hm, (2.0, 2.0), np.zeros((0, 2)), (0, 200))
    _, scores = find_peaks(hm, 10.0, 0.02, 1.0)
    ranked = np.sort(scores)[::-1]
    density = 10 / (400 * 400)  # the labeled micrographs: 10 particles per 400 x 400 px
    thr, k = count_matched_threshold([sh], 1.0, density, 20.0, 1.0)
    assert k == 10 and thr == pytest.approx(ranked[9])
    # validation kept 1.3 picks per true particle: so does the unlabeled micrograph
    thr13, k13 = count_matched_threshold([sh], 1.3, density, 20.0, 1.0)
    assert k13 == 13 and thr13 == pytest.approx(ranked[12]) and thr13 < thr
    # two alike micrographs: twice the area, twice the picks, the same threshold
    assert count_matched_threshold([sh, sh], 1.0, density, 20.0, 1.0) == (pytest.approx(ranked[9]), 20)
    # more expected than there are peaks: the candidate floor
    assert count_matched_threshold([sh], 3.0, density, 20.0, 1.0) == (0.02, 30)


def test_the_mixture_threshold_parts_confident_particles_from_background() -> None:
    from cryopick.selftrain.scoring import mixture_threshold

    # 100 peaks on a 10 x 10 grid: 40 particles scored 0.90-0.99, 60 background peaks scored 0.03-0.12
    rng = np.random.default_rng(0)
    xy = grid_points(10, 20.0, 10.0)
    values = np.r_[rng.uniform(0.90, 0.99, 40), rng.uniform(0.03, 0.12, 60)]
    sh = ScoredHeatmap("u", blobs((200, 200), xy, values), (1.0, 1.0), np.zeros((0, 2)), (0, 200))
    _, scores = find_peaks(sh.heatmap, 10.0, 0.02, 1.0)
    assert len(scores) == 100
    mixture = mixture_threshold([sh], 10.0, 1.0)
    assert mixture is not None
    threshold, mode = mixture
    assert scores[scores < 0.5].max() < threshold < scores[scores > 0.5].min()  # keeps exactly the 40 particles
    assert scores[scores > 0.5].min() < mode < scores.max()  # the particles' mean score (smoothing lowers the blobs)
    # a model that calls no peak a particle (every score below 0.5): no population to part, the count rule stands
    low = ScoredHeatmap("u", blobs((200, 200), xy, values * 0.3), (1.0, 1.0), np.zeros((0, 2)), (0, 200))
    assert mixture_threshold([low], 10.0, 1.0) is None
    # too few peaks to say anything about two populations
    few = ScoredHeatmap("u", blobs((200, 200), xy[:30], np.r_[values[:15], values[-15:]]), (1.0, 1.0), np.zeros((0, 2)), (0, 200))
    assert mixture_threshold([few], 10.0, 1.0) is None


def test_unsure_peaks_are_ignored_not_taught_as_background() -> None:
    """A half-seen particle (peak precision between negative and positive) must not become background:
    its rim and, with a weak model, its centre are below ``negative`` on the pixel table."""
    sure, unsure, faint = np.array([[25.0, 25.0]]), np.array([[75.0, 25.0]]), np.array([[25.0, 75.0]])
    hm = blobs((100, 100), np.vstack([sure, unsure, faint]), np.array([0.97, 0.5, 0.04]))
    peak_table = [0.0] * 10 + [0.5] * 20 + [1.0] * 20  # smoothed peak scores: 0.97 blob ~0.8, 0.5 blob ~0.4
    pixel_table = [0.0] * 50  # every pixel is confidently background on its own
    on = PseudoLabeler(peak_calibration=peak_table, calibration=pixel_table, positive=0.95, negative=0.05)
    m_on = on.mask(hm, diameter=16.0, scale=1.0)
    particle_disk = circle_mask(hm.shape, unsure, 8.0) == 1
    pixel_rule = pseudo_label_mask(on.probabilities(hm), 0.95, 0.05)
    assert (pixel_rule[particle_disk] == 0).all()  # the pixel rule alone: a real particle taught as background
    assert (m_on[particle_disk] == IGNORE).all()  # the whole particle radius, not just the label disk
    assert m_on[25, 25] == 1  # confident particles stay particles
    assert m_on[50, 50] == 0 and m_on[int(faint[0, 1]), int(faint[0, 0])] == 0  # empty and below-negative: background
    sure_disk = circle_mask(hm.shape, sure, 16.0 * 0.35 / 2.0) == 1
    assert ((m_on == 0) == ((pixel_rule == 0) & ~particle_disk & ~sure_disk)).all()  # nothing else changes
