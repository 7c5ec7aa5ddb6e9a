"""The stages of a self-training round as plain functions (no Ray): what the orchestrator decides.

:mod:`cryopick.distributed.orchestrator` runs a round as
[pseudo-label -> train -> predict -> Tune -> score -> log]; the Ray work (prediction, DDP training,
Tune) happens there, and every decision between those steps is a function here, tested without a
cluster: which rules label the unlabeled micrographs, whether the pseudo-labels are worth training on,
which micrographs are scored, how the threshold transfers to unseen micrographs, and what the round
records. A new self-training rule goes here (and, when it labels pixels, in :mod:`cryopick.selftrain.pseudo`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryopick import __version__
from cryopick.errors import CryopickError
from cryopick.evaluation.metrics import CANDIDATE_FLOOR, SPARSE_MIN_MATCHED, SPARSE_SHARE
from cryopick.evaluation.metrics import sparse_note as metrics_sparse_note
from cryopick.evaluation.metrics import picked_share as curve_share
from cryopick.inference.border import learn_border
from cryopick.io.atomic import atomic_write, write_json
from cryopick.io.coords import read_coords
from cryopick.io.micrograph import read_pixel_size, read_shape
from cryopick.preprocessing.binning import bin_factor
from cryopick.preprocessing.labels import circle_mask, disk_cover
from cryopick.preprocessing.labels import unpicked_prior as prior_of
from cryopick.selftrain.config import COUNT_MICROGRAPHS, ResolvedData, SelftrainConfig
from cryopick.selftrain.pseudo import PseudoLabeler, fit_calibration, fit_peak_calibration, no_particles_note, pseudo_summary
from cryopick.selftrain.scoring import (
    RoundScore, ScoredHeatmap, candidate_scores, count_matched_threshold, load_heatmap, mixture_threshold, picks_per_true, pooled,
    truth_in_rows,
)
from cryopick.selftrain.state import CAMPAIGN_FILE, config_mismatch, round_dir, too_few_pseudo_particles
from cryopick.io.coords import Box
from cryopick.training.dataset import held_strip, label_radius

SMOOTH_SIGMA = 1.0  # binned px, as single-process training
# peak distance (× diameter) of a round whose validation picks are too few (< SPARSE_MIN_MATCHED) to rank distances
# (chosen on both shared proteins' dev micrographs; docs/selftrain.md, "Few validation picks")
FEW_PICKS_DISTANCE = 0.5
# what campaigns begun before these settings existed did (their campaign.json lacks the keys)
LEGACY_SELFTRAIN = {"method": "offline", "labels": "complete"}
CALIBRATION_FILE = "calibration.json"


def expert_labels(data: ResolvedData, mics: list[Path] | None = None) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """(expert picks, (H, W)) of ``mics``, by default those labeled whole (headers and coordinate files only)."""
    return [(read_coords(data.coords_file(Path(m)))[0], read_shape(m)) for m in (data.complete if mics is None else mics)]


def expert_border(data: ResolvedData, diameter: float) -> float:
    """Edge band the expert picks leave empty: on micrographs labeled whole, and where labeled regions reach an edge."""
    return learn_border(expert_labels(data, data.labeled), diameter, [data.boxes.get(m.stem) for m in data.labeled])


def bin_of(cfg: SelftrainConfig, data: ResolvedData) -> float:
    """Original px per binned px (a target pixel size needs the pixel size: given, or the first labeled micrograph's)."""
    pixel_size = cfg.data.pixel_size
    if cfg.preprocess.target_pixel_size is not None and pixel_size is None:
        pixel_size = read_pixel_size(data.labeled[0])
    return bin_factor(cfg.preprocess, pixel_size)


def expert_density(data: ResolvedData) -> float:
    """Expert picks per ORIGINAL px² over the micrographs labeled whole (a labeled region is no sample of a
    micrograph's area: it was chosen where particles, or doubts, are)."""
    labels = expert_labels(data)
    return sum(len(xy) for xy, _ in labels) / max(1, sum(h * w for _, (h, w) in labels))


def expected_share(cfg: SelftrainConfig, data: ResolvedData) -> float | None:
    """Share of the particles the expert picked, from ``selftrain.expected_particles``: picks per micrograph
    labeled whole ÷ the particles the user expects on one (at most 1). None without the setting or such a
    micrograph (a labeled region is no sample of a micrograph)."""
    expected = cfg.selftrain.expected_particles
    labels = expert_labels(data)
    if expected is None or not labels:
        return None
    picks = sum(len(xy) for xy, _ in labels) / len(labels)
    return float(min(1.0, picks / expected))


def unpicked_prior(data: ResolvedData, diameter: float, share: float) -> float:
    """The positive-unlabeled prior (:func:`cryopick.preprocessing.labels.unpicked_prior`) of the campaign's
    picks on the micrographs labeled whole; 0 without such a micrograph (no density)."""
    return prior_of(disk_cover(expert_density(data), diameter), share) if data.complete else 0.0


def prepare_campaign(cfg: SelftrainConfig, data: ResolvedData) -> Path:
    """Write (or check against a resumed campaign) campaign.json with ``data`` as resolved; nothing touches Ray before this."""
    campaign = cfg.campaign_dir
    campaign.mkdir(parents=True, exist_ok=True)
    resolved = {**cfg.as_dict(), "cryopick_version": __version__,
                "resolved": {k: [str(p) for p in getattr(data, k)] for k in ("labeled", "unlabeled", "validation", "test")}}
    path = campaign / CAMPAIGN_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        stored.pop("cryopick_version", None)
        had = _flat_keys(stored)
        rounds = stored.setdefault("selftrain", {})
        rounds.pop("min_improvement", None)  # retired: it changed nothing at its default
        for key, before in LEGACY_SELFTRAIN.items():
            rounds.setdefault(key, before)
        current = {k: v for k, v in resolved.items() if k != "cryopick_version"}
        bad = config_mismatch(stored, current)
        if bad is not None:
            hint = (" (a campaign begun before teacher rounds resumes with --method offline --labels complete)"
                    if bad.split(".")[-1] in LEGACY_SELFTRAIN and bad not in had else "")
            raise CryopickError(f"config key {bad} differs from the campaign being resumed; use a new campaign directory{hint}", path)
    write_json(path, resolved)
    return campaign


def _flat_keys(config: dict[str, Any]) -> set[str]:
    return {f"{section}.{k}" for section, v in config.items() if isinstance(v, dict) for k in v}


def read_calibration(rdir: Path) -> dict[str, Any]:
    """A round's calibration.json (written by :func:`write_calibration`), or {} before it exists."""
    path = rdir / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def round_labeler(cfg: SelftrainConfig, prev_dir: Path) -> PseudoLabeler:
    """The pseudo-labeler a round uses: the campaign's rule with the previous round's calibration tables."""
    cal = read_calibration(prev_dir)
    calibrated = cfg.selftrain.pseudo_rule == "calibrated"
    return PseudoLabeler(positive=cfg.selftrain.positive, negative=cfg.selftrain.negative, rule=cfg.selftrain.pseudo_rule,
                         calibration=cal.get("pixel", []), peak_calibration=cal.get("peak", []),
                         min_distance_fraction=float(cal.get("min_distance", 0.6 * cfg.data.diameter)) / cfg.data.diameter,
                         balance_to=float(cal.get("positive_share", 0.0)) if calibrated else 0.0)


def reuse_heatmaps(prev_dir: Path, rdir: Path, micrographs: list[Path]) -> None:
    """Copy heatmaps the previous round already predicted (for its threshold count) into this round's pseudo/."""
    for m in micrographs:
        done, target = prev_dir / "heatmaps" / f"{m.stem}.npz", rdir / "pseudo" / f"{m.stem}.npz"
        if done.is_file() and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as tmp:
                shutil.copyfile(done, tmp)


@dataclass
class PseudoOutcome:
    """What a round's pseudo-labels amount to.

    Attributes:
        stats: pooled coverage (positive, negative, ignored shares; n_micrographs).
        pairs: (micrograph, heatmap .npz) of every unlabeled micrograph, for training.
        note: a message for the user ('' when all is well).
        stop: set when there are too few pseudo-labeled particles to learn from: the round keeps the
            previous model and the campaign stops after it.
    """

    stats: dict[str, float]
    pairs: list[tuple[Path, Path]]
    note: str = ""
    stop: str = ""


def judge_pseudo_labels(rows: list[dict[str, Any]], labeler: PseudoLabeler, unlabeled: list[Path], prev_dir: Path,
                        cfg: SelftrainConfig, rnd: int) -> PseudoOutcome:
    """Pool the per-micrograph coverage rows of the prediction stage and decide whether round ``rnd`` trains."""
    stats = pseudo_summary(rows)
    expert_share = float(read_calibration(prev_dir).get("positive_share", 0.0))  # particle share of expert-labeled pixels
    by_name = {r["name"]: Path(r["npz"]) for r in rows}
    out = PseudoOutcome(stats, [(m, by_name[m.stem]) for m in unlabeled])
    if too_few_pseudo_particles(stats["positive"], expert_share, cfg.selftrain.min_pseudo_share):
        out.note = out.stop = (
            f"pseudo-labels mark {stats['positive']:.2%} of the unlabeled pixels as particle, under "
            f"selftrain.min_pseudo_share {cfg.selftrain.min_pseudo_share:g} x the expert labels' {expert_share:.2%}; "
            f"round {rnd} keeps round {rnd - 1}'s model (training on without pseudo-labeled particles only fits "
            "the labeled micrographs longer) and the campaign stops after it; for more pseudo-labels label more "
            "micrographs, train round 0 longer or lower selftrain.positive")
    elif stats["positive"] == 0.0:
        out.note = no_particles_note(labeler)
    return out


def scored_micrographs(cfg: SelftrainConfig, data: ResolvedData) -> tuple[list[Path], list[Path], list[Path]]:
    """(validation, count, all) micrographs a round predicts after training.

    Validation: ``data.validation``, else the labeled micrographs (their held-back strips). Count:
    with strips as validation, a few unlabeled micrographs whose pick count sets the threshold
    (:func:`choose_threshold`). All: those and the test set, each once.
    """
    val = data.validation or (data.labeled if cfg.train.val_fraction > 0 else [])
    count = data.unlabeled[:COUNT_MICROGRAPHS] if not data.validation else []
    return val, count, list(dict.fromkeys([*val, *data.test, *count]))


def scored_item(mic: Path, npz: Path, data: ResolvedData, border: float, held_back: bool = False,
                val_fraction: float = 0.0, box: Box | None = None) -> ScoredHeatmap:
    """A predicted micrograph with its expert picks; ``held_back``: only its validation strip (of ``box``, a
    labeled region, if given) is scored."""
    true_xy, _ = read_coords(data.coords_file(mic))
    sh = load_heatmap(npz, true_xy, border=border)
    sh.name = mic.stem
    if held_back:
        sh.rows, sh.cols = held_strip(sh.heatmap.shape, sh.scale, val_fraction, box)
    return sh


def sparse_labels(cfg: SelftrainConfig, campaign: Path, data: ResolvedData, share: float | None = None) -> bool:
    """Whether the campaign's expert picks are sparse: ``selftrain.labels``, or for auto round 0's estimate.

    Auto never calls region labels sparse: a region is labeled completely inside (its sidecar says so), and a
    share judged on its few picks reads a weak round 0's false peaks as unpicked particles.
    ``share``: the picked share estimated in round 0 itself (before its calibration.json exists).
    """
    if cfg.selftrain.labels != "auto" or data.regions_only:
        return cfg.selftrain.labels == "sparse"
    return (judged_share_of_round0(campaign) if share is None else share) < SPARSE_SHARE


def judged_share_of_round0(campaign: Path) -> float:
    """The picked share round 0 judged the labels on (its model alone learned the unpicked areas as background)."""
    return float(read_calibration(round_dir(campaign, 0)).get("picked_share", 1.0))


def sparse_note(share: float, expected: bool = False) -> str:
    """What a user is told when auto decides the labels are sparse (``expected``: the share is the user's)."""
    what = ("round 0 learns unpicked areas as partly particle, later rounds leave them to the teacher, and the threshold "
            "is set for sparse picks" if expected else
            "unpicked areas are left to the teacher and the threshold is set for sparse picks")
    return metrics_sparse_note(share, what, expected)


def sparse_share(val_items: list[ScoredHeatmap], min_distance: float, diameter: float, fallback: float) -> float:
    """Share of the particles the expert picked, for a sparse round's expected count: the largest matched share
    (matched / picks) at any cut point of the validation strips' curve at ``min_distance``, over cut points with
    at least :data:`~cryopick.evaluation.metrics.SPARSE_MIN_MATCHED` matches; ``fallback`` where none has as many.

    Every cut point, because Tune's thresholds (0.1–0.9) do not reach the top of a confident model's ranking,
    where the matched share comes closest to the picked share; the plain share rather than its lower bound,
    because a model trained on sparse picks is not precise at its top either (matched share = share × precision),
    so this share already errs low and each bound lowers it further (docs/selftrain.md, "A sparse campaign's count").
    ``fallback``: the bounded share over Tune's trials, or where even that has too few matches, round 0's judged share.
    """
    curve = pooled(val_items, CANDIDATE_FLOOR, min_distance, SMOOTH_SIGMA, diameter)
    share = curve_share(curve, z=0.0, default=None)
    return share if share is not None and share < 1.0 else fallback


def distance_trials(trials: list[dict[str, float]], val_items: list[ScoredHeatmap], diameter: float
                    ) -> tuple[list[dict[str, float]], str]:
    """Tune's trials a round chooses its setting from, and a log line ('' when all of them).

    With fewer than ``SPARSE_MIN_MATCHED`` expert picks on the validation strips (a few sparse picks), F1 ties
    across peak distances and the tie-break would pick the largest, which drops particles closer than a
    diameter; those rounds take the trials at the grid's distance nearest ``FEW_PICKS_DISTANCE`` × diameter.
    """
    n_true = sum(len(truth_in_rows(sh)) for sh in val_items)
    distances = sorted({t["min_distance"] for t in trials})
    if n_true >= SPARSE_MIN_MATCHED or len(distances) < 2:
        return trials, ""
    md = min(distances, key=lambda d: abs(d - FEW_PICKS_DISTANCE * diameter))
    return ([t for t in trials if t["min_distance"] == md],
            f"peak distance {md:.1f} px: {n_true} validation pick(s) are too few to choose it")


def choose_threshold(best: dict[str, float], count_items: list[ScoredHeatmap], data: ResolvedData,
                     share: float | Callable[[], float] = 1.0, sparse: bool = False, mixture: bool = True) -> tuple[float, str]:
    """The threshold a round stores: Tune's, matched to the expected pick count on unlabeled micrographs, or
    (sparse picks, a confident model) where the unlabeled micrographs' peak scores part into two populations.

    ``share``: the share of the particles the expert picked (sparse labels: the expected count is the
    picks' density / share), or a function that estimates it, called only when the count is used.
    ``sparse``: first :func:`~cryopick.selftrain.scoring.mixture_threshold`, which needs no count: the share
    behind a sparse count comes from the few picks on the validation strips and can be off several-fold
    (docs/selftrain.md, "A sparse campaign's threshold"); where the model has no confident
    population, one pick per expected particle, rather than the picks per expert particle of Tune's best
    setting, whose precision against sparse picks is itself an estimate from the same count (and at most 1),
    so the count's error would enter twice. ``mixture`` False: the count even for sparse picks (a round 0 that
    learned the unpicked pixels as positive-unlabeled, whose scores do not part cleanly, with the share the user's
    expected particles give).

    Returns:
        (threshold, a log line; '' when Tune's threshold stands).
    """
    if not count_items or not data.complete:  # no micrograph labeled whole: no density to expect
        return best["threshold"], ""
    scores = candidate_scores(count_items, best["min_distance"], SMOOTH_SIGMA)  # the peaks, found once for either rule
    parted = mixture_threshold(count_items, best["min_distance"], SMOOTH_SIGMA, scores) if sparse and mixture else None
    if parted is not None:
        t, mode = parted
        return t, (f"threshold {t:.3f}, where the peak scores on {len(count_items)} unlabeled micrograph(s) part into "
                   f"particles (mean score {mode:.2f}) and background; sparse picks give no reliable count to match")
    per_true = 1.0 if sparse else picks_per_true(best)
    if callable(share):
        share = share()
    threshold, k = count_matched_threshold(count_items, per_true, expert_density(data) / max(share, 1e-3), best["min_distance"],
                                           SMOOTH_SIGMA, scores)
    why = (f"one pick per particle expected from sparse picks covering {share:.0%} of them" if sparse else
           f"{per_true:.2f} picks per expected particle, as {best['threshold']:.2f} keeps on the validation strips")
    return threshold, f"threshold {threshold:.3f}, the score of the {k}th best peak on {len(count_items)} unlabeled micrograph(s) ({why})"


def write_calibration(rdir: Path, val_items: list[ScoredHeatmap], cfg: SelftrainConfig, best: dict[str, float],
                      picked_share: float = 1.0) -> None:
    """Fit the next round's pseudo-label calibration on this round's validation heatmaps (and record the picked share)."""
    heatmaps, masks = [], []
    for sh in val_items:
        xy = sh.true_xy / np.array([sh.scale[1], sh.scale[0]])
        mask = circle_mask(sh.heatmap.shape, xy, label_radius(cfg.data.diameter, sh.mean_scale))
        scored = np.zeros(mask.shape, dtype=bool)
        (r0, r1), (c0, c1) = sh.rows, sh.cols or (0, mask.shape[1])
        scored[r0:r1, c0:c1] = True
        mask[~scored] = -1
        heatmaps.append(sh.heatmap)
        masks.append(mask)
    pixel = fit_calibration(heatmaps, masks)
    peak = fit_peak_calibration(val_items, best["min_distance"], cfg.data.diameter, SMOOTH_SIGMA)
    labeled = np.concatenate([m[m >= 0] for m in masks]) if masks else np.zeros(0)
    share = float((labeled == 1).mean()) if labeled.size else 0.0  # particle share of expert-labeled pixels
    write_json(rdir / CALIBRATION_FILE, {"pixel": pixel, "peak": peak, "min_distance": best["min_distance"], "positive_share": share,
                                         "picked_share": picked_share})


def round_metrics(rnd: int, score: RoundScore, best: dict[str, float], val_threshold: float, pseudo: PseudoOutcome | None,
                  train_result: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    """The numbers a round logs to MLflow (all floats; ``round`` aside), see docs/dev/contracts.md."""
    stats = pseudo.stats if pseudo else {"positive": 0.0, "negative": 0.0, "ignored": 0.0}
    if pseudo is None and train_result.get("teacher_positive") is not None:  # the online teacher's last labels
        pos, neg = float(train_result["teacher_positive"]), float(train_result["teacher_negative"])
        stats = {"positive": pos, "negative": neg, "ignored": max(0.0, 1.0 - pos - neg)}
    return {
        "round": rnd, "precision": score.precision, "recall": score.recall, "f1": score.f1,
        "average_precision": score.average_precision, "threshold": best["threshold"], "val_threshold": val_threshold,
        "min_distance": best["min_distance"], "train_loss": train_result.get("final_loss"), "val_f1": best["f1"],
        "n_picks": score.n_picks, "pseudo_positive": stats["positive"], "pseudo_negative": stats["negative"],
        "pseudo_ignored": stats["ignored"], **timings,
    }


def training_record(cfg: SelftrainConfig, data: ResolvedData, rnd: int, pseudo_pairs: list[tuple[Path, Path]],
                    train: Any, init: str | None, patches: tuple[int, int], ray_info: dict[str, Any],
                    result: dict[str, Any]) -> dict[str, Any]:
    """A trained round's ``config.json``: what it trained on, with which settings, and the outcome."""
    return {
        "cryopick_version": __version__, "command": "selftrain", "round": rnd, "diameter": cfg.data.diameter,
        "labeled": [str(m) for m in data.labeled], "validation": [str(m) for m in data.validation],
        "pseudo_labeled": [str(m) for m, _ in pseudo_pairs], "coords": str(data.coords),
        "preprocess": asdict(cfg.preprocess), "model": asdict(cfg.model), "train": asdict(train), "warm_start_from": init,
        "patches_per_micrograph": {"labeled": patches[0], "pseudo": patches[1]}, "ray": ray_info, "result": result,
        "labels_sha256": labels_digest(data),
    }


def labels_digest(data: ResolvedData) -> str:
    """A digest of the expert labels a round trains on: each labeled micrograph's pick file and labeled regions.

    Rounds record it (``labels_sha256`` in ``config.json``) so that the next round knows whether the user
    labeled or corrected anything in between (:func:`labels_changed`).
    """
    h = hashlib.sha256()
    for m in sorted(data.labeled, key=lambda p: p.stem):
        h.update(m.stem.encode() + b"\0" + data.coords_file(m).read_bytes() + b"\0")
        h.update(repr(tuple(tuple(b) for b in data.boxes.get(m.stem, ()))).encode() + b"\0")
    return h.hexdigest()


def warm_start_floor(prev_dir: Path, data: ResolvedData, sparse: bool) -> tuple[bool, str]:
    """Whether a round's warm start is the floor of its checkpoint rule, and why not ('' when it is).

    Not when the expert labels changed since the warm start's round (:func:`labels_changed`), nor when the round
    trains on sparse picks: the validation strips then hold a few dozen picks, a tenth of the particles the model
    finds there, and their scores did not follow a campaign's gains on dev micrographs (docs/selftrain.md,
    "Checkpoints"), so a floor keeps the warm start on noise. The warm start then competes as an ordinary
    checkpoint, kept only if every trained checkpoint scores more than one standard error below it.
    """
    if labels_changed(prev_dir, data):
        return False, "expert labels changed since the warm start's round"
    if sparse:
        return False, "the round trains on sparse picks, too few on the validation strips to rank checkpoints"
    return True, ""


def labels_changed(prev_dir: Path, data: ResolvedData) -> bool:
    """Whether the expert labels differ from those of the round in ``prev_dir`` (the warm start's).

    When they do, the warm start has not seen what the user added, and a round that keeps it
    would discard the new labels; the checkpoint rule then lets the warm start compete as an ordinary
    checkpoint rather than as the floor (:class:`cryopick.training.checkpoint.CheckpointRule`).
    A round recorded without a digest is compared by the micrographs it had labeled.
    """
    rec = json.loads((prev_dir / "config.json").read_text())
    if rec.get("labels_sha256"):
        return bool(rec["labels_sha256"] != labels_digest(data))
    return sorted(Path(m).stem for m in rec.get("labeled") or []) != sorted(m.stem for m in data.labeled)
