"""Scoring picks against expert picks: one-to-one matching within a radius, P/R/F1, PR curve, AP.

Matching is greedy in descending pick score: each pick takes the nearest still-unmatched true
centre within ``radius``. Because stronger picks match first, the matches of any score threshold
are a prefix of one sorted pass, so the whole precision-recall curve costs one matching.
Only neighbours within the radius are considered (KD-tree), so 10,000 picks cost milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

CANDIDATE_FLOOR = 0.02  # weakest peak kept as a candidate for PR curves and average precision
# `cryopick train` stores the threshold in the middle of those whose validation F1 is within this many standard
# errors of the best; with sparse picks the lowest of those within SPARSE_STRIP_SE (docs/design.md, "Stored threshold")
STRIP_NOISE_SE = 1.0
SPARSE_STRIP_SE = 0.5


@dataclass(frozen=True)
class Score:
    """Precision / recall / F1 at one threshold plus AP and the best F1 over thresholds."""

    precision: float
    recall: float
    f1: float
    average_precision: float
    n_picks: int
    n_true: int
    n_matched: int
    best_f1: float
    best_threshold: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall after keeping the k strongest picks, k = 1..N.

    thresholds[k-1] is the k-th strongest score; tp[k-1] the matches among those k picks.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray
    n_true: int

    @property
    def f1(self) -> np.ndarray:
        s = self.precision + self.recall
        return np.where(s > 0, 2 * self.precision * self.recall / np.where(s > 0, s, 1), 0.0)


def match(pred_xy: np.ndarray, pred_scores: np.ndarray, true_xy: np.ndarray, radius: float) -> np.ndarray:
    """Greedy one-to-one matching.

    Args:
        pred_xy: (N, 2) picks; pred_scores: (N,) their scores.
        true_xy: (M, 2) true centres.
        radius: maximum centre distance for a match, px.

    Returns:
        (N,) bool, in the ORIGINAL pick order: whether each pick matched a true centre.
    """
    pred_xy = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    true_xy = np.asarray(true_xy, dtype=np.float64).reshape(-1, 2)
    hit = np.zeros(len(pred_xy), dtype=bool)
    if len(pred_xy) == 0 or len(true_xy) == 0:
        return hit
    order = np.argsort(-np.asarray(pred_scores, dtype=np.float64), kind="stable")
    ordered = pred_xy[order]
    candidates = cKDTree(true_xy).query_ball_point(ordered, radius, return_sorted=True)
    taken = np.zeros(len(true_xy), dtype=bool)
    for rank, cand in enumerate(candidates):
        if not cand:
            continue
        free = [j for j in cand if not taken[j]]
        if free:
            d = np.hypot(*(true_xy[free] - ordered[rank]).T)
            j = free[int(np.argmin(d))]
            taken[j] = True
            hit[order[rank]] = True
    return hit


def pr_curve(pred_xy: np.ndarray, pred_scores: np.ndarray, true_xy: np.ndarray, radius: float) -> PRCurve:
    """The precision-recall curve over every score threshold (one greedy matching)."""
    scores = np.asarray(pred_scores, dtype=np.float64)
    hit = match(pred_xy, scores, true_xy, radius)
    return curve_from_hits(scores, hit, len(np.asarray(true_xy).reshape(-1, 2)))


def curve_from_hits(scores: np.ndarray, hit: np.ndarray, n_true: int) -> PRCurve:
    """PR curve from per-pick scores and match flags (lets several micrographs be pooled)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hit[order])
    k = np.arange(1, len(order) + 1)
    precision = tp / np.maximum(k, 1)
    recall = tp / n_true if n_true else np.zeros(len(order))
    return PRCurve(thresholds=scores[order], precision=precision, recall=recall, tp=tp, n_true=n_true)


def average_precision(curve: PRCurve) -> float:
    """Sum over recall steps of precision at that step (the uninterpolated AP, as sklearn)."""
    if curve.n_true == 0 or len(curve.tp) == 0:
        return 0.0
    d_recall = np.diff(np.concatenate([[0.0], curve.recall]))
    return float(np.sum(d_recall * curve.precision))


def cut_points(curve: PRCurve) -> np.ndarray:
    """(N,) bool: the curve's points a threshold can stop at, the last pick of each distinct score (a threshold
    keeps all equal scores)."""
    return np.r_[curve.thresholds[1:] != curve.thresholds[:-1], True]


def best_cut(curve: PRCurve) -> int:
    """Index of the cut point with the best F1 (ties: the highest threshold); the curve must not be empty."""
    return int(np.argmax(np.where(cut_points(curve), curve.f1, -1.0)))


def best_threshold(curve: PRCurve) -> tuple[float, float]:
    """(best F1, score threshold reaching it); ties go to the highest threshold (:func:`best_cut`)."""
    if len(curve.thresholds) == 0:
        return 0.0, 1.0
    i = best_cut(curve)
    return float(curve.f1[i]), float(curve.thresholds[i])


def lowest_within_noise(curve: PRCurve, k: float = SPARSE_STRIP_SE) -> tuple[float, float]:
    """(F1, threshold) at the lowest cut point whose F1 is within ``k`` binomial standard errors of the best.

    The rule for sparse picks, whose curve counts precision against the particles a micrograph holds
    (:func:`for_sparse_picks`): a strip holds a handful of their picks, the band spans most of the curve, and
    its middle stores too high a threshold (docs/design.md, "Stored threshold").
    """
    best_f1, best_t = best_threshold(curve)
    if len(curve.thresholds) == 0 or curve.n_true == 0:
        return best_f1, best_t
    i = int(_within_noise(curve, best_f1, k).max())
    return float(curve.f1[i]), float(curve.thresholds[i])


def _within_noise(curve: PRCurve, best_f1: float, k: float) -> np.ndarray:
    """Indices of the cut points whose F1 is within ``k`` binomial standard errors, sqrt(F1 (1 - F1) / n_true), of
    ``best_f1``."""
    se = float(np.sqrt(max(best_f1 * (1.0 - best_f1), 0.0) / curve.n_true))
    return np.nonzero(cut_points(curve) & (curve.f1 >= best_f1 - k * se))[0]


def centre_within_noise(curve: PRCurve, k: float = STRIP_NOISE_SE) -> tuple[float, float]:
    """(F1, threshold) at the cut point nearest the middle, in log-odds, of those whose F1 is within ``k``
    binomial standard errors of the best.

    The standard error is sqrt(F1 (1 - F1) / n_true) at the best cut point: with the few dozen picks of a
    validation strip, cut points that far apart are one or two picks apart and cannot be told apart. Either end
    of that band is where the strip's evidence is thinnest: a flat curve on a clean strip reaches down to the
    candidate floor, where unseen micrographs hold many weak false peaks, and the strip's own best can sit high
    (docs/design.md, "Stored threshold"). With many picks the band narrows to the best cut point.
    """
    best_f1, best_t = best_threshold(curve)
    if len(curve.thresholds) == 0 or curve.n_true == 0:
        return best_f1, best_t
    idx = _within_noise(curve, best_f1, k)
    t = np.clip(curve.thresholds[idx], 1e-6, 1.0 - 1e-6)
    logit = np.log(t / (1.0 - t))
    i = int(idx[np.argmin(np.abs(logit - 0.5 * (logit.min() + logit.max())))])
    return float(curve.f1[i]), float(curve.thresholds[i])


def score_at(curve: PRCurve, threshold: float) -> tuple[float, float, float, int, int]:
    """(precision, recall, F1, n_picks, n_matched) keeping picks with score >= threshold."""
    n = int(np.searchsorted(-curve.thresholds, -threshold, side="right"))
    if n == 0:
        return 0.0, 0.0, 0.0, 0, 0
    tp = int(curve.tp[n - 1])
    p = tp / n
    r = tp / curve.n_true if curve.n_true else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f1, n, tp


def summarize(curve: PRCurve, threshold: float | None = None) -> Score:
    """A :class:`Score` at ``threshold`` (None = keep every pick)."""
    t = -np.inf if threshold is None else threshold
    p, r, f1, n, tp = score_at(curve, t)
    bf1, bt = best_threshold(curve)
    return Score(
        precision=p, recall=r, f1=f1, average_precision=average_precision(curve),
        n_picks=n, n_true=curve.n_true, n_matched=tp, best_f1=bf1, best_threshold=bt,
    )


def in_strip(xy: np.ndarray, rows: tuple[int, int], cols: tuple[int, int] | None = None) -> np.ndarray:
    """(N,) bool: which (x, y) points (binned px) lie in the scored ``rows`` (and ``cols``; None: every column)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    keep = (xy[:, 1] >= rows[0]) & (xy[:, 1] < rows[1])
    if cols is not None:
        keep &= (xy[:, 0] >= cols[0]) & (xy[:, 0] < cols[1])
    return keep


def pooled_curve(per_micrograph: list[tuple[np.ndarray, np.ndarray, np.ndarray]], radius: float) -> PRCurve:
    """One PR curve over several micrographs: [(pred_xy, scores, true_xy), ...]."""
    scores, hits, n_true = [], [], 0
    for pred_xy, pred_scores, true_xy in per_micrograph:
        s = np.asarray(pred_scores, dtype=np.float64)
        scores.append(s)
        hits.append(match(pred_xy, s, true_xy, radius))
        n_true += len(np.asarray(true_xy).reshape(-1, 2))
    if not scores:
        return curve_from_hits(np.zeros(0), np.zeros(0, dtype=bool), n_true)
    return curve_from_hits(np.concatenate(scores), np.concatenate(hits), n_true)


SPARSE_MIN_MATCHED = 10  # cut points with fewer matched picks say too little about the plain picked share (z = 0)
SPARSE_MIN_MATCHED_FEW = 3  # the Wilson-bounded share falls back to this when no setting has SPARSE_MIN_MATCHED
# labels are judged sparse when the expert is estimated to have picked less than this share of the particles
SPARSE_SHARE = 0.6
SPARSE_Z = 2.0  # standard errors below each setting's matched share taken before the largest is the picked share


def wilson_lower(successes: ArrayLike, trials: ArrayLike, z: float) -> np.ndarray:
    """Wilson score lower bound of the binomial proportion successes / trials (0 where trials is 0)."""
    k, n = (np.asarray(a, dtype=np.float64) for a in (successes, trials))
    safe = np.maximum(n, 1e-12)
    p = np.clip(k / safe, 0.0, 1.0)
    centre = p + z * z / (2 * safe)
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe))
    return np.where(n > 0, (centre - half) / (1 + z * z / safe), 0.0)


def estimated_count(n_picks: ArrayLike, n_matched: ArrayLike, recall: ArrayLike, z: float = SPARSE_Z,
                    min_matched: int | None = None) -> float:
    """Particles where the expert picked, estimated from the picks themselves (0: too few matches).

    If the expert picked a random share s of the particles, a setting's matched share (matched / picks)
    is s times its precision, so at most s, and the count is (expert picks) / s, with expert picks =
    matched / recall. The largest matched share over settings estimates s where the model is most
    precise; but the largest of many noisy shares is a lucky one, which makes the count too small and the
    threshold too high. Each share is therefore replaced by its Wilson lower bound (``z`` standard errors)
    before the largest is taken, over settings with at least ``min_matched`` matches (default
    :data:`SPARSE_MIN_MATCHED`; where no setting has as many, a bounded share (``z`` > 0) is taken over
    settings with :data:`SPARSE_MIN_MATCHED_FEW`, as its bound widens with fewer matches;
    docs/selftrain.md). ``z`` = 0 is the plain largest share, which errs towards complete picks: what
    campaigns judge sparseness on.
    """
    picks, matched, rec = (np.asarray(a, dtype=np.float64) for a in (n_picks, n_matched, recall))
    ok = (matched >= (SPARSE_MIN_MATCHED if min_matched is None else min_matched)) & (rec > 0) & (picks > 0)
    if not ok.any() and min_matched is None and z > 0:
        ok = (matched >= SPARSE_MIN_MATCHED_FEW) & (rec > 0) & (picks > 0)
    if not ok.any():
        return 0.0
    share = float(wilson_lower(matched[ok], picks[ok], z).max())
    expert_picks = float(np.median(matched[ok] / rec[ok]))  # the same at every setting
    return expert_picks / share if share > 0 else 0.0


def share_picked(n_true: float, n_picks: ArrayLike, n_matched: ArrayLike, recall: ArrayLike, z: float = SPARSE_Z,
                 default: float | None = 1.0) -> float | None:
    """Share of the particles the expert picked: its ``n_true`` picks / :func:`estimated_count` (``default`` when not estimable)."""
    est = estimated_count(n_picks, n_matched, recall, z)
    return min(1.0, n_true / est) if est > 0 and n_true > 0 else default


def judged_share(matched_share: float | None, at_picks: float | None) -> float:
    """The share sparseness is judged on (below :data:`SPARSE_SHARE`: sparse): the larger of two readings, 1.0 with neither.

    ``matched_share``: the picked share from matches on the validation picks (None where too few matched to
    estimate it). ``at_picks``: the model's mean heatmap peak at the held-back expert picks. A model trained with
    the unpicked areas as background learns, at a particle, about the chance that such a particle is picked
    (Elkan & Noto, KDD 2008), so this reads near 1 for complete picks and near the share for sparse ones, and it
    needs no match: with a few picks on the strips the matches cannot tell, the peaks there still can. The
    larger reading decides, so a model that is poor at complete picks (low at the picks, yet precise at its top)
    is still judged complete. Round 0 of EMPIAR-10017 and -10028 (docs/selftrain.md): 0.77–0.99 at complete
    picks, 0.19–0.35 at 10–30 % of them.
    """
    readings = [s for s in (matched_share, at_picks) if s is not None]
    return max(readings) if readings else 1.0


def sparse_note(share: float, consequence: str, expected: bool = False) -> str:
    """What a user is told when the picks are judged sparse (``cryopick train`` and campaigns alike); ``expected``:
    the share came from the user's ``--expected-particles``, not from the validation picks."""
    how = (f"they are about {share:.0%} of the particles you expect per micrograph (--expected-particles)" if expected else
           f"on the validation picks they seem to cover about {share:.0%} of the particles "
           f"(matches and the model's probability at the picks)")
    return f"the expert picks look sparse: {how}; {consequence} (--labels complete if every particle was picked)"


def sparse_precision(n_picks: ArrayLike, n_matched: ArrayLike, recall: ArrayLike) -> np.ndarray | None:
    """Precision against the estimated particle count: recall × count / picks, at most 1 (None: count not estimable).

    Against sparse picks every unpicked particle the model finds counts as a false pick, so the F1-best
    threshold is too high; rescored, precision is what it would be against complete picks.
    """
    est = estimated_count(n_picks, n_matched, recall)
    if est <= 0:
        return None
    picks, rec = np.asarray(n_picks, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    return np.where(picks > 0, np.minimum(1.0, rec * est / np.maximum(picks, 1.0)), 0.0)


def picked_share(curve: PRCurve, z: float = SPARSE_Z, default: float | None = 1.0) -> float | None:
    """Share of the particles the expert picked, estimated along the PR curve (``default`` when it cannot be estimated)."""
    return share_picked(curve.n_true, np.arange(1, len(curve.tp) + 1), curve.tp, curve.recall, z, default)


def for_sparse_picks(curve: PRCurve, count: float | None = None) -> PRCurve:
    """The curve with precision against the particle count (unchanged when that count cannot be known).

    ``count``: the particles in the scored area, where the user said how many a micrograph holds
    (``--expected-particles``). Otherwise it is estimated from the picks themselves (:func:`sparse_precision`),
    which a few sparse validation picks cannot do reliably. Precision is then the particles found (recall × count)
    ÷ the picks, at most 1.
    """
    picks = np.arange(1, len(curve.tp) + 1)
    precision: np.ndarray | None
    if count is not None and count > 0:
        precision = np.minimum(1.0, curve.recall * max(count, curve.n_true) / picks)
    else:
        precision = sparse_precision(picks, curve.tp, curve.recall)
    return curve if precision is None else PRCurve(curve.thresholds, precision, curve.recall, curve.tp, curve.n_true)
