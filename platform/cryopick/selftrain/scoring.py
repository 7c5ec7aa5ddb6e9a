"""Scoring a round's heatmaps against expert picks, and choosing its picking threshold (no Ray).

Heatmaps arrive here as ``.npz`` files written by the prediction stage; everything below works
on one round's scored micrographs (validation or test, a handful), never on the whole campaign.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit, logit

from cryopick.evaluation.metrics import (
    CANDIDATE_FLOOR, SPARSE_MIN_MATCHED, SPARSE_Z, PRCurve, average_precision, estimated_count, in_strip, pooled_curve, score_at, share_picked, sparse_precision,
)
from cryopick.evaluation.metrics import judged_share as judge
from cryopick.inference.border import outside_band
from cryopick.inference.peaks import find_peaks, mean_max_near
from cryopick.io.coords import write_coords
from cryopick.io.atomic import atomic_write
from cryopick.selftrain.outputs import block_reduce, write_pr_curve

PREVIEW_MAX_SIDE = 512  # preview images are block-averaged down to at most this many px
MIXTURE_MIN_PEAKS = 50  # fewer candidate peaks say too little about two populations (mixture_threshold)
CONFIDENT_MODE = 0.5  # the upper population's mean probability at least this: the model calls those peaks particles


@dataclass
class ScoredHeatmap:
    """One micrograph's prediction and (optionally) its expert picks.

    Attributes:
        name: micrograph stem.
        heatmap: (h, w) float32 probabilities on the binned grid.
        scale: (sy, sx) original px per binned px.
        true_xy: (M, 2) expert centres, ORIGINAL px (empty when unknown).
        rows: (r0, r1) binned rows that are scored (a held-back strip or the whole image).
        image: (h, w) binned network input, for previews (optional).
        border: edge band in ORIGINAL px where peaks are dropped (the model's learned band; 0: none).
        cols: (c0, c1) binned columns that are scored (None: all; a region's held-back strip sets them).
    """

    name: str
    heatmap: np.ndarray
    scale: tuple[float, float]
    true_xy: np.ndarray
    rows: tuple[int, int]
    image: np.ndarray | None = None
    border: float = 0.0
    cols: tuple[int, int] | None = None

    @property
    def mean_scale(self) -> float:
        return float(np.sqrt(self.scale[0] * self.scale[1]))

    @property
    def original_shape(self) -> tuple[int, int]:
        """(H, W) of the micrograph, ORIGINAL px (Fourier cropping keeps H = h × sy exactly)."""
        return round(self.heatmap.shape[0] * self.scale[0]), round(self.heatmap.shape[1] * self.scale[1])


def load_heatmap(npz: str | Path, true_xy: np.ndarray | None = None, rows: tuple[int, int] | None = None,
                 border: float = 0.0) -> ScoredHeatmap:
    """A prediction ``.npz`` (heatmap, scale, optional image) as a :class:`ScoredHeatmap`."""
    with np.load(npz) as z:
        heatmap = z["heatmap"].astype(np.float32)
        image = z["image"].astype(np.float32) if "image" in z else None
        scale = (float(z["scale"][0]), float(z["scale"][1]))
    t = np.zeros((0, 2)) if true_xy is None else np.asarray(true_xy, dtype=np.float64).reshape(-1, 2)
    return ScoredHeatmap(Path(npz).stem, heatmap, scale, t, rows or (0, heatmap.shape[0]), image, border)


def picks_of(sh: ScoredHeatmap, threshold: float, min_distance: float, smooth_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of one heatmap inside its scored strip and outside its edge band -> ((N, 2) ORIGINAL px, (N,) scores)."""
    allowed = outside_band(sh.heatmap.shape, sh.scale, sh.original_shape, sh.border)
    xy, s = find_peaks(sh.heatmap, min_distance / sh.mean_scale, threshold, smooth_sigma, allowed=allowed)
    keep = in_strip(xy, sh.rows, sh.cols)
    return xy[keep] * np.array([sh.scale[1], sh.scale[0]]), s[keep]


def truth_in_rows(sh: ScoredHeatmap) -> np.ndarray:
    """Expert picks (ORIGINAL px) whose binned position lies in the scored strip."""
    return sh.true_xy[in_strip(sh.true_xy / np.array([sh.scale[1], sh.scale[0]]), sh.rows, sh.cols)]


def pooled(items: Sequence[ScoredHeatmap], threshold: float, min_distance: float, smooth_sigma: float, diameter: float) -> PRCurve:
    """One PR curve over ``items`` with picks at or above ``threshold`` (radius = diameter / 2)."""
    per = [(*picks_of(sh, threshold, min_distance, smooth_sigma), truth_in_rows(sh)) for sh in items]
    return pooled_curve(per, radius=diameter / 2.0)


def score_picks(
    items: Sequence[ScoredHeatmap], threshold: float, min_distance: float, diameter: float, smooth_sigma: float = 1.0
) -> dict[str, float]:
    """Precision, recall and F1 (the plain :mod:`cryopick.evaluation.metrics` ones) at one setting."""
    curve = pooled(items, threshold, min_distance, smooth_sigma, diameter)
    p, r, f1, n, tp = score_at(curve, threshold)
    return {"precision": p, "recall": r, "f1": f1, "n_picks": float(n), "n_matched": float(tp)}


def write_preview(path: Path, sh: ScoredHeatmap, picks_xy: np.ndarray, picks_score: np.ndarray) -> None:
    """preview/<stem>.npz: image/heatmap (float16, at most PREVIEW_MAX_SIDE px), scale, picks, truth."""
    k = max(1, int(np.ceil(max(sh.heatmap.shape) / PREVIEW_MAX_SIDE)))
    heat = block_reduce(sh.heatmap, k)
    image = block_reduce(sh.image, k) if sh.image is not None else np.zeros_like(heat)
    scale = np.array([sh.scale[0] * k, sh.scale[1] * k], dtype=np.float64)
    with atomic_write(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, image=image.astype(np.float16), heatmap=heat.astype(np.float16), scale=scale,
                picks_xy=np.asarray(picks_xy, np.float64).reshape(-1, 2), picks_score=np.asarray(picks_score, np.float64),
                truth_xy=sh.true_xy.astype(np.float64).reshape(-1, 2),
            )


@dataclass
class RoundScore:
    """What a round reports on its scored micrographs."""

    precision: float
    recall: float
    f1: float
    average_precision: float
    n_picks: int
    curve: PRCurve


def score_and_write(
    out: Path,
    items: Sequence[ScoredHeatmap],
    threshold: float,
    min_distance: float,
    diameter: float,
    smooth_sigma: float,
    box_size: float | None = None,
) -> RoundScore:
    """Pick ``items`` at the tuned setting; write picks/*.star, preview/*.npz and pr_curve.csv.

    AP and the PR curve are over every candidate peak (threshold ``CANDIDATE_FLOOR``); precision,
    recall and F1 at ``threshold``.
    """
    per = []
    for sh in items:
        xy, s = picks_of(sh, CANDIDATE_FLOOR, min_distance, smooth_sigma)
        per.append((xy, s, truth_in_rows(sh)))
        keep = s >= threshold
        write_coords(out / "picks" / f"{sh.name}.star", xy[keep], s[keep], "star", box_size or round(1.5 * diameter))
        write_preview(out / "preview" / f"{sh.name}.npz", sh, xy[keep], s[keep])
    curve = pooled_curve(per, radius=diameter / 2.0)
    write_pr_curve(out / "pr_curve.csv", curve)
    p, r, f1, n, _ = score_at(curve, threshold)
    return RoundScore(p, r, f1, average_precision(curve), n, curve)


def best_trial(trials: Sequence[dict[str, float]], tolerance: float = 0.0) -> dict[str, float]:
    """The trial whose setting picks with: highest F1, or with ``tolerance`` > 0 the LOWEST threshold
    among trials within ``tolerance`` of the highest F1 (then the higher F1, then the larger distance).

    Why lower: with few labels the validation picks are a held-back strip of a training
    micrograph, where the model is more confident than on unseen micrographs, so the F1-optimal
    threshold there is biased upwards; among near-ties the lowest is the one that transfers.
    """
    if not trials:
        raise ValueError("no Tune trials")
    top = max(t["f1"] for t in trials)
    if tolerance <= 0:
        return max(trials, key=lambda t: (round(t["f1"], 12), t["threshold"], t["min_distance"]))
    near = [t for t in trials if t["f1"] >= top - tolerance]
    return min(near, key=lambda t: (t["threshold"], -round(t["f1"], 12), -t["min_distance"]))


def picks_per_true(trial: dict[str, float]) -> float:
    """Picks kept per expert particle at a Tune trial's setting (recall / precision; 1 with no match)."""
    return trial["recall"] / trial["precision"] if trial["precision"] > 0 else 1.0


def candidate_scores(items: Sequence[ScoredHeatmap], min_distance: float, smooth_sigma: float) -> np.ndarray:
    """(N,) scores of every candidate peak (at or above the candidate floor) on ``items``, pooled."""
    scores = [picks_of(sh, CANDIDATE_FLOOR, min_distance, smooth_sigma)[1] for sh in items]
    return np.concatenate(scores) if scores else np.zeros(0)


def count_matched_threshold(items: Sequence[ScoredHeatmap], picks_per_true: float, density: float, min_distance: float,
                            smooth_sigma: float, scores: np.ndarray | None = None) -> tuple[float, int]:
    """The threshold that keeps as many picks per expected particle on ``items`` as validation kept.

    Held-back validation strips belong to training micrographs, where the model is more confident
    than on unseen ones, so the threshold that is F1-best there is too high elsewhere (on EMPIAR-10017
    with one label: 0.30–0.60 chosen on the strip, 0.07–0.30 best on the dev micrographs). Counts transfer
    better than scores: the validation-best setting keeps ``picks_per_true`` picks per expert particle,
    and unseen micrographs hold about ``density`` (expert picks per ORIGINAL px², from the labeled
    micrographs) × their area particles. The threshold is the score of the k-th best candidate peak
    on ``items`` (heatmaps of unlabeled micrographs; no labels used), k = picks_per_true × expected.
    ``scores``: :func:`candidate_scores` of ``items`` where the caller has them already.

    Returns:
        (threshold, k); the candidate floor when the peaks run out before k.
    """
    ranked = np.sort(candidate_scores(items, min_distance, smooth_sigma) if scores is None else scores)[::-1]
    area = sum(sh.original_shape[0] * sh.original_shape[1] for sh in items)
    k = max(1, int(round(picks_per_true * density * area)))
    if k > len(ranked):
        return CANDIDATE_FLOOR, k
    return float(ranked[k - 1]), k


def mixture_threshold(items: Sequence[ScoredHeatmap], min_distance: float, smooth_sigma: float,
                      scores: np.ndarray | None = None) -> tuple[float, float] | None:
    """The score where the candidate peaks of ``items`` part into two populations, particles and background.

    A two-component Gaussian mixture on the logits of every candidate peak (score >= the candidate floor) of
    ``items`` (heatmaps of unlabeled micrographs; no labels used); the threshold is where the upper component
    becomes the more probable one. It needs no particle count, so it serves where sparse picks cannot give one.
    ``scores``: :func:`candidate_scores` of ``items`` where the caller has them already.

    Returns:
        (threshold, the upper component's mean as a probability), or None with fewer than
        :data:`MIXTURE_MIN_PEAKS` peaks or an upper component below :data:`CONFIDENT_MODE` (a model that does not
        call its likeliest peaks particles, such as one trained on sparse picks with their unpicked areas as
        background, has no particle population to part from).
    """
    from sklearn.mixture import GaussianMixture  # deferred: scikit-learn is slow to import

    s = candidate_scores(items, min_distance, smooth_sigma) if scores is None else scores
    if len(s) < MIXTURE_MIN_PEAKS:
        return None
    x = logit(np.clip(s.astype(np.float64), 1e-4, 1 - 1e-4))[:, None]
    gm = GaussianMixture(2, random_state=0).fit(x)
    lo, hi = np.argsort(gm.means_[:, 0])
    mode = float(expit(gm.means_[hi, 0]))
    if mode < CONFIDENT_MODE:
        return None
    grid = np.linspace(gm.means_[lo, 0], gm.means_[hi, 0], 1001)
    upper = gm.predict_proba(grid[:, None])[:, hi] >= 0.5
    cut = float(grid[int(np.argmax(upper))])  # the first point between the means where the upper component wins
    return float(expit(cut)), mode




def _counts(trials: Sequence[dict[str, float]]) -> tuple[list[float], list[float], list[float]]:
    """(picks, matched picks, recall) of Tune's trials."""
    return [t["n_picks"] for t in trials], [t.get("n_matched", 0.0) for t in trials], [t["recall"] for t in trials]


def estimated_particles(trials: Sequence[dict[str, float]]) -> float:
    """Particles on the validation picks' area, estimated from Tune's trials (:func:`estimated_count`; 0: too few matches)."""
    return estimated_count(*_counts(trials))


def picked_share(trials: Sequence[dict[str, float]], z: float = SPARSE_Z, default: float | None = 1.0) -> float | None:
    """Share of the particles the expert picked on the validation picks' area (``default`` when it cannot be estimated).

    ``z``: as :func:`cryopick.evaluation.metrics.estimated_count`; 0 to judge whether the picks are sparse at all.
    """
    n_true = max((t["n_matched"] / t["recall"] for t in trials if t["recall"] > 0), default=0.0)
    return share_picked(n_true, *_counts(trials), z=z, default=default)


def at_picks(items: Sequence[ScoredHeatmap], diameter: float) -> float | None:
    """Mean heatmap peak within a quarter diameter of the expert picks in the items' scored strips (None: no pick there)."""
    return mean_max_near((sh.heatmap, truth_in_rows(sh) / np.array([sh.scale[1], sh.scale[0]]), diameter / 4 / sh.mean_scale)
                         for sh in items)


def judged_share(trials: Sequence[dict[str, float]], peak_at_picks: float | None = None) -> float:
    """The picked share a campaign judges sparseness on (below ``SPARSE_SHARE``: sparse).

    :func:`cryopick.evaluation.metrics.judged_share` of ``peak_at_picks`` (:func:`at_picks` on the validation
    strips) and the matched share: the plain largest over settings with ``SPARSE_MIN_MATCHED`` matches, which errs
    towards complete picks; where no setting has as many, the Wilson-bounded share over settings with
    ``SPARSE_MIN_MATCHED_FEW`` matches, as ``cryopick train`` judges; none with fewer (docs/selftrain.md).
    """
    if max((t.get("n_matched", 0.0) for t in trials), default=0.0) >= SPARSE_MIN_MATCHED:
        return judge(picked_share(trials, z=0.0, default=None), peak_at_picks)
    return judge(picked_share(trials, default=None), peak_at_picks)


def sparse_trials(trials: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """Tune trials rescored with :func:`cryopick.evaluation.metrics.sparse_precision`, as a curve is rescored."""
    precision = sparse_precision(*_counts(trials))
    if precision is None:
        return [dict(t) for t in trials]
    out = []
    for t, p in zip(trials, precision.tolist()):
        f1 = 2 * p * t["recall"] / (p + t["recall"]) if p + t["recall"] > 0 else 0.0
        out.append({**t, "precision": p, "f1": f1})
    return out
