"""The edge band expert picks leave empty: learned from labels, stored with the model, applied at picking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryopick.inference.border import (
    FEW_LABELS_BAND, MIN_EXPECTED_IN_BAND, SLACK_DIAMETERS, drop_near_edge, edge_distance, learn_border, outside_band,
)
from cryopick.config import PickConfig, from_dict
from cryopick.errors import CryopickError
from cryopick.io.coords import read_coords
from cryopick.io.micrograph import read_shape
from cryopick.inference.picker import PickerMeta, heatmap_to_picks
from cryopick.preprocessing.binning import Binned
from cryopick.selftrain.scoring import ScoredHeatmap, score_picks
from conftest import mic_paths


def test_edge_distance_hand_cases() -> None:
    xy = np.array([[0.0, 50.0], [99.0, 50.0], [50.0, 10.0], [50.0, 190.0], [50.0, 100.0]])
    # image of 200 rows x 100 columns: last column x = 99, last row y = 199
    np.testing.assert_allclose(edge_distance(xy, (200, 100)), [0.0, 0.0, 10.0, 9.0, 49.0])


def test_drop_near_edge_keeps_only_the_interior() -> None:
    xy = np.array([[5.0, 50.0], [50.0, 50.0], [95.0, 50.0], [50.0, 97.0]])
    s = np.array([0.9, 0.8, 0.7, 0.6])
    kept, ks = drop_near_edge(xy, s, (100, 100), 10.0)
    np.testing.assert_array_equal(kept, [[50.0, 50.0]])
    np.testing.assert_array_equal(ks, [0.8])
    same, _ = drop_near_edge(xy, s, (100, 100), 0.0)
    assert len(same) == 4


def test_learn_border_finds_an_empty_band_and_stops_short_of_it() -> None:
    rng = np.random.default_rng(0)
    shape, band, diameter = (1024, 1024), 32.0, 27.0
    labels = [(rng.uniform(band, 1023 - band, size=(600, 2)), shape) for _ in range(3)]
    got = learn_border(labels, diameter)
    lowest = min(edge_distance(xy, shape).min() for xy, _ in labels)
    assert got == pytest.approx(lowest - SLACK_DIAMETERS * diameter)
    assert 28.0 < got < 30.0


def test_learn_border_gives_sparse_labels_the_radius_not_the_band_they_leave_empty_by_chance() -> None:
    # 6 picks in a 1024² image: an empty 150 px band is expected to hold < 5 of them
    shape = (1024, 1024)
    xy = np.array([[200.0, 300.0], [500.0, 500.0], [800.0, 150.0], [300.0, 800.0], [700.0, 700.0], [150.0, 600.0]])
    expected = len(xy) * (1024**2 - (1024 - 2 * 150.0) ** 2) / 1024**2
    assert expected < MIN_EXPECTED_IN_BAND
    assert learn_border([(xy, shape)], 27.0) == FEW_LABELS_BAND * 27.0
    assert learn_border([], 27.0) == 0.0
    # a sparse pick closer to an edge than the radius: that kind of pick is kept
    near = np.vstack([xy, [[10.0, 500.0]]])
    assert learn_border([(near, shape)], 27.0) == pytest.approx(10.0 - SLACK_DIAMETERS * 27.0)
    # picks on the edge itself: no band
    dense = np.random.default_rng(1).uniform(0, 1023, size=(500, 2))
    dense[0] = (0.0, 400.0)
    assert learn_border([(dense, shape)], 27.0) == 0.0


def _corner_picks(n: int, seed: int, band: float = 32.0, side: float = 300.0) -> np.ndarray:
    """n picks in the top-left ``side``² corner, none closer than ``band`` to an edge, one exactly at ``band``."""
    xy = np.random.default_rng(seed).uniform(band + 1, side - 1, size=(n, 2))
    xy[0] = (band, side / 2)
    return xy


def test_regions_that_reach_an_edge_show_the_band() -> None:
    shape, diameter = (1024, 1024), 27.0
    corner = (0.0, 0.0, 300.0, 300.0)  # a labeled region reaching two edges
    xy = _corner_picks(60, 0)
    got = learn_border([(xy, shape)], diameter, [[corner]])
    assert got == pytest.approx(32.0 - SLACK_DIAMETERS * diameter)
    # the same picks labeled whole say the opposite: the rest of the micrograph, band included, holds nothing
    assert learn_border([(xy, shape)], diameter) == pytest.approx(got)
    # a region filled up to its sides, away from the edges, says nothing about them, however many picks it holds
    inner = np.random.default_rng(1).uniform(380, 620, size=(200, 2))
    assert learn_border([(inner, shape)], diameter, [[(380.0, 380.0, 620.0, 620.0)]]) == FEW_LABELS_BAND * diameter
    # picks outside a micrograph's regions are not its labels: one on the edge does not erase the band
    stray = np.vstack([xy, [[1.0, 900.0]]])
    assert learn_border([(stray, shape)], diameter, [[corner]]) == pytest.approx(got)
    # regions and whole micrographs together: the smallest edge distance of either
    whole = np.random.default_rng(2).uniform(40, 984, size=(400, 2))
    both = learn_border([(xy, shape), (whole, shape)], diameter, [[corner], None])
    assert both == pytest.approx(got)


def test_a_region_band_needs_enough_expected_picks_and_overlaps_count_once() -> None:
    shape, corner = (1024, 1024), (0.0, 0.0, 300.0, 300.0)
    share = (300.0**2 - 268.0**2) / 300.0**2  # of the corner within 32 px of an edge
    few = _corner_picks(20, 3)
    assert 20 * share < MIN_EXPECTED_IN_BAND < 2 * 20 * share
    radius = FEW_LABELS_BAND * 27.0  # too few labels: the radius, not the band
    assert learn_border([(few, shape)], 27.0, [[corner]]) == radius
    assert learn_border([(few, shape)], 27.0, [[corner, corner]]) == radius  # the same region twice is one region
    halves = [(0.0, 0.0, 300.0, 160.0), (0.0, 140.0, 300.0, 300.0)]  # overlapping halves of the corner
    assert learn_border([(few, shape)], 27.0, [halves]) == radius
    assert learn_border([(_corner_picks(30, 3), shape)], 27.0, [halves]) == pytest.approx(32.0 - SLACK_DIAMETERS * 27.0)


def test_heatmap_to_picks_applies_the_stored_border_unless_overridden() -> None:
    hm = np.zeros((128, 128), np.float32)
    for x, y in [(2, 64), (64, 64), (125, 20)]:  # binned px; bin 2 -> original x2
        hm[y, x] = 1.0
    binned = Binned(image=hm, scale=(2.0, 2.0), original_shape=(256, 256))
    meta = PickerMeta(diameter=20.0, min_distance=10.0, smooth_sigma=0.0, border=20.0)
    xy, _ = heatmap_to_picks(hm, binned, meta, 0.5)
    np.testing.assert_allclose(xy, [[128.0, 128.0]])
    xy_all, _ = heatmap_to_picks(hm, binned, meta, 0.5, border=0.0)
    assert len(xy_all) == 3


def test_outside_band_agrees_with_edge_distance_in_original_pixels() -> None:
    shape, scale, original = (50, 40), (4.0, 5.0), (200, 200)
    ok = outside_band(shape, scale, original, 21.0)
    assert ok is not None and ok.shape == shape
    rows, cols = np.mgrid[0:50, 0:40]
    xy = np.stack([cols.ravel() * 5.0, rows.ravel() * 4.0], axis=1)
    np.testing.assert_array_equal(ok.ravel(), edge_distance(xy, original) >= 21.0)
    assert outside_band(shape, scale, original, 0.0) is None


def test_campaign_scoring_drops_the_band_as_picking_does() -> None:
    hm = np.zeros((100, 100), np.float32)
    for x, y, v in [(3, 50, 1.0), (50, 96, 0.9), (40, 40, 0.8), (60, 60, 0.7)]:  # two in the 10 px band
        hm[y, x] = v
    binned = Binned(image=hm, scale=(1.0, 1.0), original_shape=(100, 100))
    meta = PickerMeta(diameter=20.0, min_distance=15.0, smooth_sigma=0.0, border=10.0)
    xy, _ = heatmap_to_picks(hm, binned, meta, 0.5)
    np.testing.assert_allclose(xy, [[40.0, 40.0], [60.0, 60.0]])
    truth = np.array([[40.0, 40.0], [60.0, 60.0]])
    banded = ScoredHeatmap("m", hm, (1.0, 1.0), truth, (0, 100), border=10.0)
    assert banded.original_shape == (100, 100)
    s = score_picks([banded], 0.5, 15.0, 20.0, smooth_sigma=0.0)
    assert (s["n_picks"], s["f1"]) == (2.0, 1.0)
    plain = score_picks([ScoredHeatmap("m", hm, (1.0, 1.0), truth, (0, 100))], 0.5, 15.0, 20.0, smooth_sigma=0.0)
    assert plain["n_picks"] == 4.0 and plain["precision"] == 0.5  # the band's two picks count as false positives


def test_negative_border_is_a_config_error() -> None:
    with pytest.raises(CryopickError, match="pick.border"):
        from_dict(PickConfig, {"border": -1.0}, "pick")


def test_expert_picks_of_empiar10017_leave_a_32px_band(empiar: Path, split: dict[str, list[str]]) -> None:
    """The labeled micrographs alone show the band every split shares (no pick within 32 px)."""
    labels = []
    for mic in mic_paths(empiar, split["labeled"]):
        xy, _ = read_coords(empiar / "coords" / f"{mic.stem}.star")
        labels.append((xy, read_shape(mic)))
    assert all(shape == (1024, 1024) for _, shape in labels)
    got = learn_border(labels, 27.0)
    assert got == pytest.approx(32.1 - SLACK_DIAMETERS * 27.0, abs=0.2)
    test_mins = [edge_distance(read_coords(empiar / "coords" / f"{n}.star")[0], (1024, 1024)).min() for n in split["test"]]
    assert min(test_mins) >= got  # the learned band removes no expert pick of the test split


def test_a_campaign_labeled_in_regions_learns_the_band_of_empiar10017(empiar: Path, split: dict[str, list[str]]) -> None:
    """One corner region (the campaign's own region grid) of one labeled micrograph shows the band whole
    micrographs show; regions away from the edges show none (the radius stands in)."""
    from cryopick.selftrain.acquisition import region_boxes
    from cryopick.selftrain.config import ResolvedData
    from cryopick.selftrain.stages import expert_border
    from cryopick.selftrain.suggest import default_region_size

    mics = mic_paths(empiar, split["labeled"])
    grid = {m.stem: region_boxes(read_shape(m), default_region_size(27.0)) for m in mics}
    whole = expert_border(ResolvedData(mics, [], [], [], empiar / "coords"), 27.0)
    corner = expert_border(ResolvedData(mics[:1], [], [], [], empiar / "coords", boxes={mics[0].stem: (grid[mics[0].stem][0],)}), 27.0)
    assert whole == pytest.approx(32.1 - SLACK_DIAMETERS * 27.0, abs=0.2)
    assert corner == pytest.approx(whole, abs=0.5)
    inner = {m.stem: tuple(b for b in grid[m.stem] if min(b.x0, b.y0) > 0 and max(b.x1, b.y1) < 1024) for m in mics}
    assert all(inner.values())
    assert expert_border(ResolvedData(mics, [], [], [], empiar / "coords", boxes=inner), 27.0) == FEW_LABELS_BAND * 27.0
