"""``cryopick evaluate`` behind the CLI: score directories of pick files against expert picks (by stem)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryopick.errors import CryopickError
from cryopick.evaluation.metrics import PRCurve, Score, curve_from_hits, match, summarize
from cryopick.io.coords import COORD_SUFFIXES, read_coords


@dataclass
class Evaluation:
    overall: Score
    curve: PRCurve
    per_micrograph: dict[str, Score]
    pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # stem -> (pred_xy, scores, true_xy)
    picks_without_truth: list[str] = field(default_factory=list)  # stems left out: no true-pick file
    truth_without_picks: list[str] = field(default_factory=list)  # stems left out: not picked


def _coord_files(directory: Path) -> dict[str, Path]:
    if directory.is_file():
        raise CryopickError("is a file: give the directory that holds the coordinate files", directory)
    if not directory.is_dir():
        raise CryopickError("no such directory", directory)
    files: dict[str, Path] = {}
    for suffix in COORD_SUFFIXES:
        for p in sorted(directory.glob(f"*{suffix}")):
            if p.stem.endswith("_boxes"):
                continue
            files.setdefault(p.stem, p)
    return files


def evaluate_dirs(
    picks_dir: Path, truth_dir: Path, diameter: float, radius: float | None = None, threshold: float | None = None
) -> Evaluation:
    """Score the pick files in ``picks_dir`` against the true ones in ``truth_dir`` (by stem).

    The micrographs scored are those with a pick file (``cryopick pick`` writes one for every
    micrograph, empty when nothing was found), so a truth directory holding the whole data set
    can score a picked subset. Pick files without a true-pick file are left out.
    """
    if diameter <= 0:
        raise CryopickError(f"--diameter must be positive, got {diameter:g}")
    radius = radius if radius is not None else diameter / 2.0
    truth = _coord_files(truth_dir)
    picks = _coord_files(picks_dir)
    if not truth:
        raise CryopickError("no coordinate files (.star/.box/.csv/.txt)", truth_dir)
    if not set(truth) & set(picks):
        raise CryopickError(f"no pick file matches a true-pick file by name (e.g. {next(iter(truth))})", picks_dir)
    per: dict[str, Score] = {}
    pairs = {}
    all_scores, all_hits, n_true = [], [], 0
    for stem in sorted(set(truth) & set(picks)):
        true_xy, _ = read_coords(truth[stem])
        pred_xy, scores = read_coords(picks[stem])
        hit = match(pred_xy, scores, true_xy, radius)
        curve = curve_from_hits(scores, hit, len(true_xy))
        per[stem] = summarize(curve, threshold)
        pairs[stem] = (pred_xy, scores, true_xy)
        all_scores.append(scores)
        all_hits.append(hit)
        n_true += len(true_xy)
    curve = curve_from_hits(np.concatenate(all_scores), np.concatenate(all_hits), n_true)
    return Evaluation(summarize(curve, threshold), curve, per, pairs, sorted(set(picks) - set(truth)), sorted(set(truth) - set(picks)))
