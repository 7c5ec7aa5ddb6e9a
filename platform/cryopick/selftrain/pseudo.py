"""Pseudo-labels for self-training: heatmap -> {1, 0, -1} mask, with calibration and class balance.

The rule is the issue's: p > positive -> particle, p < negative -> background, otherwise ignored
(:func:`cryopick.preprocessing.labels.pseudo_label_mask`). What ``p`` is matters: a U-Net trained with BCE on
circle masks is not calibrated. On EMPIAR-10017 a 400-step round-0 model trained on one labeled
micrograph never outputs less than 0.05 anywhere: raw 0.95/0.05 thresholds labeled 0.25 % of the
unlabeled pixels as particle, 0 % as background and ignored the rest. So, by default:

- background: ``p`` is the heatmap mapped through an isotonic fit of P(pixel is an expert-labeled
  particle pixel | heatmap value) on the previous round's validation picks (:func:`fit_calibration`);
- particles: peaks whose calibrated precision P(peak is a true particle | peak score)
  (:func:`fit_peak_calibration`) exceeds ``positive``, painted as full label-radius disks, the
  shape expert labels have (the bare pixel rule keeps only a blob's most confident core);
- uncertain peaks: a peak whose calibrated precision lies between ``negative`` and ``positive`` is
  neither particle nor background, so its particle-radius disk is ignored rather than left to the
  pixel rule, which taught real particles the model only half sees (their rims and weak centres
  fall below ``negative``) as background;
- class balance: confident particles are rarer than confident background, so random background
  pixels are ignored until particles have the share they have in the expert labels
  (``balance_to``); unbalanced, the next round under-predicts particles and loses recall.

``rule="plain", balance_to=0`` is the bare rule on raw heatmap values (``selftrain.pseudo_rule: plain``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cryopick.preprocessing.labels import IGNORE, LABEL_RADIUS_FRACTION, circle_mask, mask_coverage, pseudo_label_mask

N_BINS = 50

if TYPE_CHECKING:
    from cryopick.selftrain.scoring import ScoredHeatmap


def pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing fit of ``y`` (weights ``w``)."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.astype(np.float64), w.astype(np.float64)):
        vals.append(yi)
        wts.append(wi)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum if wsum > 0 else 0.5 * (vals[-2] + vals[-1])
            vals[-2:], wts[-2:], sizes[-2:] = [v], [wsum], [sizes[-2] + sizes[-1]]
    return np.repeat(vals, sizes)


def fit_calibration(heatmaps: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_bins: int = N_BINS) -> list[float]:
    """Isotonic P(mask == 1 | heatmap value) on ``n_bins`` equal bins of [0, 1].

    Args:
        heatmaps: (h, w) model probabilities.
        masks: matching (h, w) int8 expert masks in {-1, 0, 1}; -1 pixels are not used.

    Returns:
        ``n_bins`` non-decreasing probabilities, one per bin (empty bins borrow their neighbours).
    """
    pos = np.zeros(n_bins)
    tot = np.zeros(n_bins)
    for hm, mk in zip(heatmaps, masks):
        valid = mk >= 0
        b = np.clip((hm[valid] * n_bins).astype(np.int64), 0, n_bins - 1)
        tot += np.bincount(b, minlength=n_bins)
        pos += np.bincount(b, weights=(mk[valid] == 1).astype(np.float64), minlength=n_bins)
    if tot.sum() == 0:
        raise ValueError("no labeled pixels to calibrate on")
    frac = np.where(tot > 0, pos / np.maximum(tot, 1), 0.0)
    # empty bins get zero weight, so PAV fills them from their neighbours
    fit = pav(frac, tot)
    filled = np.interp(np.arange(n_bins), np.nonzero(tot > 0)[0], fit[tot > 0])
    return [float(v) for v in np.maximum.accumulate(filled)]


def apply_calibration(heatmap: np.ndarray, table: Sequence[float]) -> np.ndarray:
    """Map (h, w) heatmap values through a calibration table (linear between bin centres)."""
    t = np.asarray(table, dtype=np.float32)
    centres = (np.arange(len(t), dtype=np.float32) + 0.5) / len(t)
    return np.interp(heatmap, centres, t).astype(np.float32)


def peak_hits(items: Sequence[ScoredHeatmap], min_distance: float, diameter: float, smooth_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores (K,) and match flags (K,) of every candidate peak on validation heatmaps."""
    from cryopick.evaluation.metrics import match
    from cryopick.evaluation.metrics import CANDIDATE_FLOOR
    from cryopick.selftrain.scoring import picks_of, truth_in_rows

    scores, hits = [], []
    for sh in items:
        xy, s = picks_of(sh, CANDIDATE_FLOOR, min_distance, smooth_sigma)
        scores.append(s)
        hits.append(match(xy, s, truth_in_rows(sh), diameter / 2.0))
    return np.concatenate(scores) if scores else np.zeros(0), np.concatenate(hits) if hits else np.zeros(0, bool)


def fit_peak_calibration(items: Sequence[ScoredHeatmap], min_distance: float, diameter: float, smooth_sigma: float = 1.0,
                         n_bins: int = N_BINS) -> list[float]:
    """Isotonic P(peak is a true particle | peak score) on validation picks (``n_bins`` bins of [0, 1])."""
    scores, hits = peak_hits(items, min_distance, diameter, smooth_sigma)
    if len(scores) == 0:
        return []
    b = np.clip((scores * n_bins).astype(np.int64), 0, n_bins - 1)
    tot = np.bincount(b, minlength=n_bins).astype(np.float64)
    pos = np.bincount(b, weights=hits.astype(np.float64), minlength=n_bins)
    frac = np.where(tot > 0, pos / np.maximum(tot, 1), 0.0)
    fit = pav(frac, tot)
    filled = np.interp(np.arange(n_bins), np.nonzero(tot > 0)[0], fit[tot > 0])
    return [float(v) for v in np.maximum.accumulate(filled)]


@dataclass
class PseudoLabeler:
    """How a heatmap becomes a pseudo-label mask (sent to Ray Data tasks as plain fields).

    Attributes:
        positive, negative: probability thresholds (p > positive -> 1, p < negative -> 0).
        rule: ``calibrated`` (the default, see the module docstring): values mapped through the
            tables where there are tables, confident peaks painted as label-radius disks, unsure
            peaks' particle disks ignored; ``plain``: the bare pixel rule on raw heatmap values.
        calibration: pixel table from :func:`fit_calibration` (``calibrated``; empty: raw values).
        peak_calibration: peak table from :func:`fit_peak_calibration` (``calibrated``; empty: raw values).
        label_radius_fraction: disk radius as a share of the particle radius (as for labels).
        min_distance_fraction: peak separation, as a share of the diameter.
        balance_to: > 0: ignore random background pixels until particles make up this share.
    """

    positive: float = 0.95
    negative: float = 0.05
    calibration: list[float] = field(default_factory=list)
    peak_calibration: list[float] = field(default_factory=list)
    rule: str = "calibrated"
    label_radius_fraction: float = LABEL_RADIUS_FRACTION
    min_distance_fraction: float = 0.6
    balance_to: float = 0.0

    @property
    def calibrated(self) -> bool:
        return self.rule == "calibrated"

    def _balance(self, mask: np.ndarray) -> np.ndarray:
        """Ignore random background pixels so pos / (pos + neg) >= ``balance_to`` (the labeled share).

        Confident particles are rarer than confident background; unbalanced, the next round
        learns that particles are rarer than they are and its recall drops.
        """
        n_pos, n_neg = int((mask == 1).sum()), int((mask == 0).sum())
        if self.balance_to <= 0 or n_neg == 0:
            return mask
        keep = n_pos * (1.0 - self.balance_to) / self.balance_to
        if keep >= n_neg:
            return mask
        rng = np.random.default_rng(n_pos * 1_000_003 + n_neg)  # deterministic per mask
        neg = np.flatnonzero(mask == 0)
        drop = rng.choice(neg, size=n_neg - int(keep), replace=False)
        out = mask.copy()
        out.flat[drop] = IGNORE
        return out

    def probabilities(self, heatmap: np.ndarray) -> np.ndarray:
        """(h, w) pixel probabilities (calibrated when a table is there)."""
        if self.calibrated and self.calibration:
            return apply_calibration(heatmap, self.calibration)
        return heatmap.astype(np.float32)

    def mask(self, heatmap: np.ndarray, diameter: float, scale: float) -> np.ndarray:
        """(h, w) heatmap on the binned grid -> (h, w) int8 mask in {-1, 0, 1}.

        Args:
            diameter: particle diameter, original px; scale: original px per binned px.
        """
        mask = pseudo_label_mask(self.probabilities(heatmap), self.positive, self.negative)
        if not self.calibrated:
            return self._balance(mask)
        from cryopick.evaluation.metrics import CANDIDATE_FLOOR
        from cryopick.inference.peaks import find_peaks

        xy, s = find_peaks(heatmap, self.min_distance_fraction * diameter / scale, CANDIDATE_FLOOR, 1.0)
        if self.peak_calibration:
            q = apply_calibration(s, self.peak_calibration)  # the table was fitted on smoothed peak scores
        else:
            q = heatmap[xy[:, 1].astype(int), xy[:, 0].astype(int)]  # raw: the heatmap value itself
        radius = max(1.0, self.label_radius_fraction * diameter / 2.0 / scale)
        mask[mask == 1] = IGNORE  # particles come from peaks, not from core pixels
        unsure = (q >= self.negative) & (q <= self.positive)
        # the whole particle, not the label disk: a half-seen particle's rim is what the pixel rule calls background
        mask[circle_mask(mask.shape, xy[unsure], max(1.0, diameter / 2.0 / scale)) == 1] = IGNORE
        mask[circle_mask(mask.shape, xy[q > self.positive], radius) == 1] = 1
        return self._balance(mask)


def no_particles_note(labeler: PseudoLabeler) -> str:
    """Why a round got no pseudo-labeled particle, in words a user can act on."""
    if labeler.calibrated and labeler.peak_calibration:
        top = max(labeler.peak_calibration)
        if top <= labeler.positive:
            why = (f"no peak of the previous round's model reaches calibrated precision > {labeler.positive:g} "
                   f"on its validation picks (at most {top:.2f})")
        else:
            why = f"no peak on the unlabeled micrographs scored high enough for calibrated precision > {labeler.positive:g}"
    else:
        why = f"no heatmap value passed the particle threshold {labeler.positive:g}"
    balanced = ", so class balancing ignored the confident background too" if labeler.balance_to > 0 else ""
    return (f"no pseudo-labeled particles: {why}{balanced}. This round trains on the expert labels only; "
            "label more micrographs, train round 0 longer or lower selftrain.positive.")


def coverage_row(mask: np.ndarray) -> dict[str, float]:
    """One micrograph's pseudo-label coverage plus its pixel count (for pooling)."""
    row = mask_coverage(mask)
    row["pixels"] = float(mask.size)
    return row


def pseudo_summary(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Pixel-weighted pseudo-label coverage over micrographs: rows with positive/negative/ignored/pixels."""
    tot = {"positive": 0.0, "negative": 0.0, "ignored": 0.0}
    pixels, n = 0.0, 0
    for row in rows:
        w = float(row["pixels"])
        for k in tot:
            tot[k] += float(row[k]) * w
        pixels += w
        n += 1
    out = {k: (v / pixels if pixels else 0.0) for k, v in tot.items()}
    out["n_micrographs"] = n
    return out
