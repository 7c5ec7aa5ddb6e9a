"""Peak recovery on planted peaks and matching / PR / AP on hand-computed cases."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cryopick.evaluation.metrics import (
    average_precision, best_threshold, centre_within_noise, curve_from_hits, lowest_within_noise, match, pooled_curve, pr_curve,
    score_at, summarize,
)
from cryopick.inference.peaks import connected_boxes, find_peaks, greedy_nms


def planted(shape: tuple[int, int], xy: np.ndarray, amp: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    h = np.zeros(shape)
    for (x, y), a in zip(xy, amp):
        h += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return h


def test_planted_peaks_recovered_exactly() -> None:
    rng = np.random.default_rng(1)
    xy = np.array([[x, y] for x in range(12, 190, 25) for y in range(12, 140, 25)], dtype=float)
    amp = rng.uniform(0.6, 1.0, len(xy))
    got_xy, got_s = find_peaks(planted((150, 200), xy, amp), min_distance=8, threshold=0.3)
    assert len(got_xy) == len(xy)
    d, _ = __import__("scipy.spatial", fromlist=["cKDTree"]).cKDTree(xy).query(got_xy)
    assert d.max() == 0.0
    assert np.all(np.diff(got_s) <= 0)  # strongest first
    np.testing.assert_allclose(np.sort(got_s), np.sort(amp), atol=1e-6)


def test_min_distance_threshold_and_border() -> None:
    xy = np.array([[20.0, 20.0], [26.0, 20.0], [60.0, 60.0], [2.0, 40.0]])
    h = planted((80, 80), xy, np.array([1.0, 0.9, 0.4, 0.8]), sigma=1.0)
    got, _ = find_peaks(h, min_distance=5, threshold=0.5)  # 6 px apart: both kept; 0.4 dropped
    assert {tuple(p) for p in got} == {(20.0, 20.0), (26.0, 20.0), (2.0, 40.0)}
    got, s = find_peaks(h, min_distance=10, threshold=0.5, border=5)  # NMS keeps the stronger one
    assert [tuple(p) for p in got] == [(20.0, 20.0)] and s[0] == pytest.approx(1.0)


def test_greedy_nms_is_exact_euclidean() -> None:
    xy = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 4.9]])  # sorted by score already
    assert greedy_nms(xy, 5.0).tolist() == [0, 1, 2]  # 5.0 apart is allowed; 4.9 is not
    assert greedy_nms(xy, 5.01).tolist() == [0, 2]


def test_connected_boxes() -> None:
    h = np.zeros((20, 20))
    h[2:5, 3:7] = 1
    h[10:12, 10:11] = 0.8
    np.testing.assert_array_equal(connected_boxes(h, 0.5), [[3, 2, 7, 5], [10, 10, 11, 12]])


def test_matching_is_one_to_one_and_greedy_by_score() -> None:
    truth = np.array([[10.0, 10.0], [30.0, 10.0]])
    pred = np.array([[11.0, 10.0], [10.0, 12.0], [30.0, 14.9], [50.0, 50.0]])
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    # the 0.9 pick takes truth 0; the 0.5 pick near it is then a false positive; 4.9 px < radius 5
    assert match(pred, scores, truth, radius=5.0).tolist() == [False, True, True, False]
    assert match(pred, scores, truth, radius=4.0).tolist() == [False, True, False, False]  # 4.9 > 4


def test_pr_curve_ap_and_best_threshold_by_hand() -> None:
    truth = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
    pred = np.array([[0.0, 1.0], [500.0, 0.0], [100.0, 0.0], [900.0, 0.0], [200.0, 2.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    c = pr_curve(pred, scores, truth, radius=3.0)
    np.testing.assert_allclose(c.precision, [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    np.testing.assert_allclose(c.recall, [1 / 4, 1 / 4, 2 / 4, 2 / 4, 3 / 4])
    assert average_precision(c) == pytest.approx(0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 3 / 5)
    f1, thr = best_threshold(c)
    assert f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35) and thr == 0.5
    s = summarize(c, threshold=0.7)
    assert (s.n_picks, s.n_matched, s.precision, s.recall) == (3, 2, pytest.approx(2 / 3), 0.5)
    assert s.f1 == pytest.approx(4 / 7)


def test_the_sparse_threshold_is_the_lowest_one_validation_cannot_tell_from_the_best() -> None:
    # 30 true particles: 29 found at scores 0.99..0.71, a false pick at 0.70, the last particle at 0.30, then 5 false
    scores = np.r_[np.linspace(0.99, 0.71, 29), 0.70, 0.30, np.linspace(0.25, 0.05, 5)]
    hits = np.r_[np.ones(29, bool), False, True, np.zeros(5, bool)]
    c = curve_from_hits(scores, hits, 30)
    best, at = best_threshold(c)
    assert at == pytest.approx(0.30) and best == pytest.approx(2 * 30 / 61)  # all 30 found, one false pick
    # one standard error (0.03 at 30 picks) reaches down past the first false picks below 0.30
    f1, low = lowest_within_noise(c, 1.0)
    assert low < 0.30 and f1 >= best - np.sqrt(best * (1 - best) / 30) and f1 < best
    assert lowest_within_noise(c, 0.0) == (pytest.approx(best), pytest.approx(0.30))  # no slack: the best cut point
    more = curve_from_hits(np.tile(scores, 10), np.tile(hits, 10), 300)  # ten times the picks: a narrower noise band
    assert lowest_within_noise(more, 1.0)[1] >= low


def test_the_stored_threshold_is_the_middle_of_those_validation_cannot_tell_from_the_best() -> None:
    # a clean strip of 12 particles: one strong false peak, the particles at 0.90..0.60, weak false peaks at 0.05, 0.03
    scores = np.r_[0.95, np.linspace(0.90, 0.60, 12), 0.05, 0.03]
    hits = np.r_[False, np.ones(12, bool), False, False]
    c = curve_from_hits(scores, hits, 12)
    best, at = best_threshold(c)
    assert at == pytest.approx(0.60) and best == pytest.approx(24 / 25)  # all 12 found, one false pick
    se = np.sqrt(best * (1 - best) / 12)
    assert score_at(c, 0.05)[2] >= best - se  # one standard error reaches down to the weak false peak...
    f1, t = centre_within_noise(c, 1.0)
    assert t == pytest.approx(0.60) and f1 == pytest.approx(best)  # ...but the middle of the band stays with the particles
    assert centre_within_noise(c, 0.0) == (pytest.approx(best), pytest.approx(0.60))  # no slack: the best cut point
    # a band of many cut points (scores 0.99..0.01, every other one a particle): its middle in log-odds is 0.5
    s = np.linspace(0.99, 0.01, 99)
    flat = curve_from_hits(s, np.arange(99) % 2 == 0, 50)
    f1, t = centre_within_noise(flat, 1e9)  # every cut point within noise
    assert t == pytest.approx(0.50)


def test_pooled_curve_and_empty_cases() -> None:
    a = (np.array([[0.0, 0.0]]), np.array([0.9]), np.array([[0.0, 0.0]]))
    b = (np.zeros((0, 2)), np.zeros(0), np.array([[5.0, 5.0]]))
    s = summarize(pooled_curve([a, b], 2.0))
    assert (s.precision, s.recall, s.n_true) == (1.0, 0.5, 2)
    empty = summarize(pooled_curve([b], 2.0))
    assert empty.f1 == 0.0 and empty.n_picks == 0


def test_ten_thousand_picks_cost_milliseconds_not_seconds() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 4096, (10_000, 2))
    pred = truth + rng.normal(0, 3, truth.shape)
    t0 = time.perf_counter()
    hit = match(pred, rng.uniform(size=10_000), truth, radius=10.0)
    elapsed = time.perf_counter() - t0
    assert hit.mean() > 0.95
    assert elapsed < 5.0  # generous bound against an accidental O(N*M) loop; timings live in benchmarks


def test_max_near_reads_the_window_around_each_point() -> None:
    from cryopick.inference.peaks import max_near

    h = np.zeros((20, 30))
    h[5, 7], h[15, 25], h[10, 10] = 0.3, 0.9, 0.5
    got = max_near(h, np.array([[8.0, 6.0], [25.0, 15.0], [2.0, 18.0], [40.0, 5.0]]), radius=1.0)
    np.testing.assert_allclose(got, [0.3, 0.9, 0.0, 0.0])  # within one px; empty window; outside the heatmap
    assert max_near(h, np.array([[13.0, 10.0]]), radius=2.6)[0] == 0.5  # radius rounds to 3 px
    assert max_near(h, np.zeros((0, 2)), radius=2.0).shape == (0,)
