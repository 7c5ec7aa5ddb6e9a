"""Per-round pieces of a self-training campaign that need no Ray: scoring, pseudo-label
statistics and the round directory's files (see docs/dev/contracts.md).

Heatmaps arrive here as ``.npz`` files written by the prediction stage; everything below works
on one round's scored micrographs (validation or test, a handful), never on the whole campaign.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryopick.border import outside_band
from cryopick.io.atomic import atomic_write, write_json, write_text_atomic
from cryopick.io.coords import write_coords
from cryopick.metrics import PRCurve, average_precision, pooled_curve, score_at
from cryopick.peaks import find_peaks

if TYPE_CHECKING:
    from cryopick.selftrain import SelftrainConfig

CANDIDATE_FLOOR = 0.02  # weakest peak kept for PR curves
PREVIEW_MAX_SIDE = 512  # preview images are block-averaged down to at most this many px


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
    """

    name: str
    heatmap: np.ndarray
    scale: tuple[float, float]
    true_xy: np.ndarray
    rows: tuple[int, int]
    image: np.ndarray | None = None
    border: float = 0.0

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
    """Peaks of one heatmap inside its scored rows and outside its edge band -> ((N, 2) ORIGINAL px, (N,) scores)."""
    allowed = outside_band(sh.heatmap.shape, sh.scale, sh.original_shape, sh.border)
    xy, s = find_peaks(sh.heatmap, min_distance / sh.mean_scale, threshold, smooth_sigma, allowed=allowed)
    keep = (xy[:, 1] >= sh.rows[0]) & (xy[:, 1] < sh.rows[1])
    return xy[keep] * np.array([sh.scale[1], sh.scale[0]]), s[keep]


def truth_in_rows(sh: ScoredHeatmap) -> np.ndarray:
    """Expert picks (ORIGINAL px) whose binned row lies in the scored rows."""
    y = sh.true_xy[:, 1] / sh.scale[0]
    return sh.true_xy[(y >= sh.rows[0]) & (y < sh.rows[1])]


def pooled(items: Sequence[ScoredHeatmap], threshold: float, min_distance: float, smooth_sigma: float, diameter: float) -> PRCurve:
    """One PR curve over ``items`` with picks at or above ``threshold`` (radius = diameter / 2)."""
    per = [(*picks_of(sh, threshold, min_distance, smooth_sigma), truth_in_rows(sh)) for sh in items]
    return pooled_curve(per, radius=diameter / 2.0)


def score_picks(
    items: Sequence[ScoredHeatmap], threshold: float, min_distance: float, diameter: float, smooth_sigma: float = 1.0
) -> dict[str, float]:
    """Precision, recall and F1 (the plain :mod:`cryopick.metrics` ones) at one setting."""
    curve = pooled(items, threshold, min_distance, smooth_sigma, diameter)
    p, r, f1, n, tp = score_at(curve, threshold)
    return {"precision": p, "recall": r, "f1": f1, "n_picks": float(n), "n_matched": float(tp)}


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


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV written atomically."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_pr_curve(path: Path, curve: PRCurve, max_points: int = 500) -> None:
    """threshold,precision,recall; thinned to ``max_points`` evenly spaced cut points."""
    n = len(curve.thresholds)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int)) if n else np.zeros(0, int)
    write_csv(path, ("threshold", "precision", "recall"),
              ((f"{curve.thresholds[i]:.6g}", f"{curve.precision[i]:.6g}", f"{curve.recall[i]:.6g}") for i in idx))


def block_reduce(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (edges padded by replication): (h, w) -> (ceil(h/k), ceil(w/k))."""
    if k <= 1:
        return a
    h, w = a.shape
    ph, pw = (-h) % k, (-w) % k
    a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).mean(axis=(1, 3))


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


def write_tune_csv(path: Path, trials: Sequence[dict[str, float]]) -> None:
    """tune.csv: threshold,min_distance,f1,precision,recall (one row per trial)."""
    keys = ("threshold", "min_distance", "f1", "precision", "recall")
    write_csv(path, keys, ([f"{t[k]:.6g}" for k in keys] for t in trials))


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


def count_matched_threshold(items: Sequence[ScoredHeatmap], picks_per_true: float, density: float, min_distance: float,
                            smooth_sigma: float) -> tuple[float, int]:
    """The threshold that keeps as many picks per expected particle on ``items`` as validation kept.

    Held-back validation strips belong to training micrographs, where the model is more confident
    than on unseen ones, so the threshold that is F1-best there is too high elsewhere (on EMPIAR-10017
    with one label: 0.30–0.60 chosen on the strip, 0.07–0.30 best on the dev micrographs). Counts transfer
    better than scores: the validation-best setting keeps ``picks_per_true`` picks per expert particle,
    and unseen micrographs hold about ``density`` (expert picks per ORIGINAL px², from the labeled
    micrographs) × their area particles. The threshold is the score of the k-th best candidate peak
    on ``items`` (heatmaps of unlabeled micrographs; no labels used), k = picks_per_true × expected.

    Returns:
        (threshold, k); the candidate floor when the peaks run out before k.
    """
    scores = [picks_of(sh, CANDIDATE_FLOOR, min_distance, smooth_sigma)[1] for sh in items]
    ranked = np.sort(np.concatenate(scores))[::-1] if scores else np.zeros(0)
    area = sum(sh.original_shape[0] * sh.original_shape[1] for sh in items)
    k = max(1, int(round(picks_per_true * density * area)))
    if k > len(ranked):
        return CANDIDATE_FLOOR, k
    return float(ranked[k - 1]), k


def adopt_picker(source: str | Path, rdir: Path, cfg: SelftrainConfig, border: float) -> list[str]:
    """Use an existing picker as round 0: save it into ``rdir`` with a ``config.json`` saying where from.

    ``source`` is a ``cryopick train`` run directory, a campaign's round directory or a ``model.pt``.
    Its model, preprocessing and diameter must be the campaign's (heatmaps, patches and
    pseudo-labels depend on them); ``border`` is the campaign's edge band. Returns warnings for the
    log: the campaign's validation picks should be unseen by the picker, or round 0's validation
    F1 and the thresholds tuned on it are optimistic.
    """
    from dataclasses import asdict, is_dataclass

    from cryopick.errors import CryopickError
    from cryopick.picker import load_picker, save_picker

    src = Path(source).expanduser()
    model, meta = load_picker(src)
    shown = lambda v: asdict(v) if is_dataclass(v) and not isinstance(v, type) else v  # noqa: E731
    for what, theirs, ours in (("model", meta.model, cfg.model), ("preprocess", meta.preprocess, cfg.preprocess),
                               ("diameter", meta.diameter, cfg.data.diameter)):
        if theirs != ours:
            raise CryopickError(f"selftrain.round0_model: its {what} is {shown(theirs)}, the campaign's is {shown(ours)}; "
                                f"set the campaign's {what} to match", src)
    meta.border = border
    save_picker(rdir, model, meta)
    run_dir = src if src.is_dir() else src.parent
    trained: dict[str, Any] = {}
    if (run_dir / "config.json").is_file():
        trained = json.loads((run_dir / "config.json").read_text())
    if (run_dir / "history.csv").is_file():
        write_text_atomic(rdir / "history.csv", (run_dir / "history.csv").read_text())
    write_json(rdir / "config.json", {
        "command": "selftrain", "round": 0, "adopted_from": str(src.resolve()), "diameter": cfg.data.diameter,
        "labeled": cfg.data.labeled, "preprocess": asdict(cfg.preprocess), "model": asdict(cfg.model),
        "trained": trained, "result": {"best_step": 0, "train_seconds": 0.0, "final_loss": None},
    })
    return validation_overlap(trained, cfg)


def keep_previous(prev_dir: Path, rdir: Path, rnd: int, why: str) -> None:
    """Make round ``rnd`` a copy of the previous round's model, with a ``config.json`` saying why."""
    from cryopick.picker import MODEL_FILE

    with atomic_write(rdir / MODEL_FILE) as tmp:
        shutil.copyfile(prev_dir / MODEL_FILE, tmp)
    write_json(rdir / "config.json", {
        "command": "selftrain", "round": rnd, "kept_from": str(prev_dir.resolve()), "why": why,
        "result": {"best_step": 0, "train_seconds": 0.0, "final_loss": None, "kept_previous": True},
    })


def validation_overlap(trained: dict[str, Any], cfg: SelftrainConfig) -> list[str]:
    """Warnings if the picker described by ``trained`` (its config.json) may have seen the campaign's validation picks."""
    seen = {Path(m).stem for m in [*trained.get("micrographs", []), *trained.get("labeled", [])]}
    if cfg.data.validation:
        hit = sorted(seen & {Path(m).stem for m in cfg.data.validation})
        why = "round 0's validation F1 is optimistic"
        return [f"round0_model was trained on validation micrograph(s) {', '.join(hit)}: {why}"] if hit else []
    ours = cfg.train.val_fraction
    theirs = float((trained.get("train") or {}).get("val_fraction", ours))
    held = not (trained.get("val_micrographs") or trained.get("validation"))  # strips are held back only without these
    hit = sorted(seen & {Path(m).stem for m in cfg.data.labeled})
    if hit and (not held or theirs < ours):
        return [f"round0_model was trained on part of the validation strips (bottom {ours:g} of {', '.join(hit)}): "
                "round 0's validation F1 is optimistic"]
    return []
