"""Acquisition: which micrographs, or regions of them, a user should label next.

A round's model scores every unlabeled micrograph, and every region of one (a square in original
pixels that the user labels completely; outside it nothing is taught), by what a label there
would teach it:

- **uncertainty**: the share of candidate peaks (heatmap maxima above ``CANDIDATE_FLOOR``) whose
  score lies within ``UNSURE_BAND`` of the round's threshold, i.e. picks the model could as well
  keep as drop; and the mean binary entropy at those peaks;
- **disagreement**: the mean standard deviation, at the candidate peaks, of the test-time
  augmentation views (flips and quarter turns) that picking averages anyway;
- **expected errors** (strategy ``errors``): the corrections a user is expected to make there,
  Σ over candidate peaks of 1 − c for the picks (each may be a false pick) and c for the others
  (each may be a missed particle), c the round's calibrated peak precision (its ``calibration.json``;
  the peak score itself without one). A sum, not a mean: a region of many doubtful peaks outranks
  one of a few, which is where a label corrects most;
- **diversity**: suggestions are chosen greedily, each one's score discounted by its closeness (in
  simple image and heatmap statistics) to those already chosen, so that k suggestions are not k
  near-copies of one hard region.

``random`` is the baseline. Plain functions of numpy arrays; the CLI (``cryopick suggest``) and the
orchestrator feed them heatmaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cryopick.evaluation.metrics import CANDIDATE_FLOOR
from cryopick.inference.peaks import find_peaks
from cryopick.io.coords import Box
from cryopick.selftrain.pseudo import apply_calibration

STRATEGIES = ("combined", "errors", "uncertainty", "disagreement", "random")
DEFAULT_STRATEGY = "combined"  # selftrain.suggest and `cryopick suggest --strategy` (docs/selftrain.md, "Asking for labels")
UNSURE_BAND = 0.15  # a candidate peak within this of the threshold counts as unsure
REGION_SIZE = 256  # default region edge, original px


@dataclass
class Scored:
    """One candidate for labeling: a whole micrograph (``box`` None) or a region of it.

    Attributes:
        micrograph: the micrograph's file stem.
        uncertainty: share of candidate peaks within ``UNSURE_BAND`` of the threshold.
        entropy: mean binary entropy (bits) of the candidate peaks' scores.
        disagreement: mean std of the test-time-augmentation views at the candidate peaks.
        n_candidates: candidate peaks inside.
        n_picks: peaks at or above the threshold (the picks a user would start from).
        features: statistics for the diversity term.
        expected_errors: expected false picks + missed particles among the candidate peaks.
    """

    micrograph: str
    box: Box | None
    uncertainty: float
    entropy: float
    disagreement: float
    n_candidates: int
    n_picks: int
    features: np.ndarray = field(repr=False)
    expected_errors: float = 0.0


def region_boxes(shape: tuple[int, int], size: int = REGION_SIZE) -> list[Box]:
    """Non-overlapping ``size``-px squares covering an (H, W) micrograph; the last row and column end at its edge."""
    h, w = shape
    starts = lambda n: sorted({min(s, max(0, n - size)) for s in range(0, n, size)})  # noqa: E731
    return [Box(x, y, min(x + size, w), min(y + size, h)) for y in starts(h) for x in starts(w)]


def open_regions(boxes: Sequence[Box], labeled: Sequence[Box]) -> list[Box]:
    """The ``boxes`` not already labeled: less than half of each is covered by the ``labeled`` (x0, y0, x1, y1) boxes."""
    def covered(b: Box) -> float:
        area = sum(max(0.0, min(b.x1, x1) - max(b.x0, x0)) * max(0.0, min(b.y1, y1) - max(b.y0, y0)) for x0, y0, x1, y1 in labeled)
        return area / max(1, (b.x1 - b.x0) * (b.y1 - b.y0))
    return [b for b in boxes if covered(b) < 0.5]


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def score_views(views: np.ndarray, scale: tuple[float, float], micrograph: str, threshold: float, min_distance: float,
                image: np.ndarray | None = None, box: Box | None = None, calibration: Sequence[float] | None = None) -> Scored:
    """:func:`score_maps` of (V, h, w) test-time-augmentation views (V may be 1): their mean and spread."""
    return score_maps(views.mean(axis=0), views.std(axis=0), scale, micrograph, threshold, min_distance, image, box,
                      calibration)


def expected_errors(scores: np.ndarray, threshold: float, calibration: Sequence[float] | None = None) -> float:
    """Expected false picks + missed particles among candidate peaks of ``scores`` (K,) at ``threshold``: Σ 1 − c
    over the picks, Σ c over the rest; c = P(true particle | score) from the ``calibration`` table
    (:func:`cryopick.selftrain.pseudo.apply_calibration`), the score itself without one."""
    scores = np.asarray(scores, dtype=np.float32)
    c = apply_calibration(scores, calibration) if calibration else scores
    return float(np.where(scores >= threshold, 1.0 - c, c).sum())


def score_maps(
    heatmap: np.ndarray,
    spread: np.ndarray,
    scale: tuple[float, float],
    micrograph: str,
    threshold: float,
    min_distance: float,
    image: np.ndarray | None = None,
    box: Box | None = None,
    calibration: Sequence[float] | None = None,
) -> Scored:
    """Acquisition scores of one micrograph (or the part of it inside ``box``).

    Args:
        heatmap: (h, w) mean of the test-time-augmentation views on the binned grid.
        spread: (h, w) standard deviation of those views (zeros for one view).
        scale: (sy, sx) original px per binned px.
        threshold: the round's picking threshold.
        min_distance: peak distance, binned px.
        image: (h, w) preprocessed micrograph, for the diversity statistics (optional).
        box: region in original px; None scores the whole micrograph.
        calibration: the round's peak calibration table (``calibration.json`` "peak"), for the expected errors.
    """
    if box is not None:
        rows = slice(int(np.floor(box.y0 / scale[0])), int(np.ceil(box.y1 / scale[0])))
        cols = slice(int(np.floor(box.x0 / scale[1])), int(np.ceil(box.x1 / scale[1])))
        heatmap, spread = heatmap[rows, cols], spread[rows, cols]
        image = None if image is None else image[rows, cols]
    xy, scores = find_peaks(heatmap, min_distance, CANDIDATE_FLOOR)
    r, c = xy[:, 1].astype(int), xy[:, 0].astype(int)
    at_peaks = spread[r, c] if len(xy) else np.zeros(0)
    unsure = np.abs(scores - threshold) <= UNSURE_BAND
    stats = [float(heatmap.mean()), float(heatmap.std()), float((heatmap >= threshold).mean()), len(xy) / max(heatmap.size, 1) * 1e3]
    if image is not None and image.size:
        stats += [float(image.mean()), float(image.std())]
    return Scored(
        micrograph=micrograph, box=box,
        uncertainty=float(unsure.mean()) if len(xy) else 0.0,
        entropy=float(_entropy(scores).mean()) if len(xy) else 0.0,
        disagreement=float(at_peaks.mean()) if len(xy) else 0.0,
        n_candidates=int(len(xy)), n_picks=int((scores >= threshold).sum()),
        features=np.asarray(stats, dtype=np.float64),
        expected_errors=expected_errors(scores, threshold, calibration),
    )


def base_score(s: Scored, strategy: str) -> float:
    """A candidate's worth before diversity: the measure the strategy names; combined: the mean of the
    unsure share, the entropy (bits) and twice the view spread (a probability's std is at most 0.5), each in [0, 1];
    errors: the expected errors (a count)."""
    if strategy == "errors":
        return s.expected_errors
    if strategy == "uncertainty":
        return s.uncertainty
    if strategy == "disagreement":
        return s.disagreement
    return (s.uncertainty + s.entropy + 2.0 * s.disagreement) / 3.0


def rank(candidates: Sequence[Scored], k: int, strategy: str = DEFAULT_STRATEGY, diversity: bool = True,
         seed: int = 0) -> list[tuple[Scored, float]]:
    """The ``k`` candidates to label next, best first, each with the score it was chosen by.

    Greedy: each step takes the candidate with the highest base score times ``min(1, d / d_ref)``,
    d its distance (standardised statistics) to the nearest one already chosen and d_ref the
    median distance between all candidates; an exact duplicate of a chosen one scores 0.
    ``random`` ignores the scores (a seeded permutation).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (use {', '.join(STRATEGIES)})")
    k = min(k, len(candidates))
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(candidates))[:k]
        return [(candidates[i], 0.0) for i in order]
    base = np.array([base_score(c, strategy) for c in candidates])
    if not diversity or len(candidates) < 3:
        order = np.argsort(-base, kind="stable")[:k]
        return [(candidates[i], float(base[i])) for i in order]
    feats = _standardised([c.features for c in candidates])
    dist = np.linalg.norm(feats[:, None, :] - feats[None, :, :], axis=-1)
    d_ref = float(np.median(dist[np.triu_indices(len(candidates), 1)])) or 1.0
    nearest = np.full(len(candidates), np.inf)
    chosen: list[tuple[Scored, float]] = []
    free = np.ones(len(candidates), dtype=bool)
    for _ in range(k):
        value = base * np.minimum(1.0, nearest / d_ref)
        value[~free] = -np.inf
        i = int(np.argmax(value))
        chosen.append((candidates[i], float(value[i])))
        free[i] = False
        nearest = np.minimum(nearest, dist[i])
    return chosen


def _standardised(features: Sequence[np.ndarray]) -> np.ndarray:
    width = min(len(f) for f in features)
    f = np.stack([np.asarray(x[:width], dtype=np.float64) for x in features])
    sd = f.std(axis=0)
    return (f - f.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
