"""File-level workflows behind the CLI: train from files, pick files, evaluate directories.

Plain functions (no Ray): the CLI, the pipelines and the Ray layer all call these.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cryopick import __version__
from cryopick.border import learn_border
from cryopick.config import ModelConfig, PickConfig, PreprocessConfig, TrainConfig, to_dict
from cryopick.dataset import load_labeled, split_items
from cryopick.errors import CryopickError
from cryopick.io.atomic import write_json, write_text_atomic
from cryopick.io.coords import FORMATS, find_coords_file, read_coords, write_coords
from cryopick.io.micrograph import read_micrograph, write_mrc
from cryopick.metrics import PRCurve, Score, curve_from_hits, match, summarize
from cryopick.peaks import connected_boxes
from cryopick.picker import PickerMeta, load_picker, pick_binned
from cryopick.predict import resolve_device
from cryopick.preprocess import preprocess
from cryopick.train import TrainResult, train_picker


def train_from_files(
    micrographs: Sequence[Path],
    coords_dir: Path,
    diameter: float,
    out_dir: Path,
    pre: PreprocessConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    val_micrographs: Sequence[Path] = (),
    pixel_size: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a picker on labeled micrographs; write model.pt, config.json, history and plots."""
    if diameter <= 0:
        raise CryopickError(f"--diameter must be positive, got {diameter:g}")
    t0 = time.monotonic()
    labeled = [load_labeled(m, coords_dir, diameter, pre, pixel_size) for m in micrographs]
    val = [load_labeled(m, coords_dir, diameter, pre, pixel_size) for m in val_micrographs]
    train_items, val_items = split_items(labeled, val, diameter, train_cfg.label_radius_fraction, train_cfg.val_fraction)
    border = learn_border([(lm.binned.to_original(lm.xy), lm.binned.original_shape) for lm in [*labeled, *val]], diameter)
    meta = PickerMeta(diameter=diameter, preprocess=pre, model=model_cfg, smooth_sigma=1.0, border=border)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "cryopick_version": __version__,
        "command": "train",
        "micrographs": [str(m) for m in micrographs],
        "val_micrographs": [str(m) for m in val_micrographs],
        "coords": str(coords_dir),
        "diameter": diameter,
        "pixel_size": pixel_size,
        "preprocess": to_dict(pre),
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
    }
    write_json(out_dir / "config.json", config)  # the plan, before the long part
    load_s = time.monotonic() - t0
    result = train_picker(train_items, val_items, meta, train_cfg, out_dir, progress=progress)
    config["result"] = {
        "threshold": result.meta.threshold,
        "min_distance": result.meta.min_distance,
        "border": result.meta.border,
        "val_f1": result.meta.val_f1,
        "val_average_precision": result.val.average_precision if result.val else None,
        "best_step": result.best_step,
        "train_seconds": result.seconds,
        "load_seconds": load_s,
    }
    write_json(out_dir / "config.json", config)
    if result.val is not None and result.val.curve is not None:
        from cryopick.plots import plot_pr_curves

        plot_pr_curves(out_dir / "val_pr.png", {"validation": result.val.curve}, "Validation precision-recall")
    return result


@dataclass
class PickRecord:
    micrograph: Path
    output: Path
    n_picks: int
    seconds: float


def output_path(out_dir: Path, micrograph: Path, fmt: str) -> Path:
    return out_dir / f"{micrograph.stem}{FORMATS[fmt]}"


def pick_files(
    model_dir: Path,
    micrographs: Sequence[Path],
    out_dir: Path,
    cfg: PickConfig,
    fmt: str = "star",
    box_size: float | None = None,
    save_heatmaps: bool = False,
    boxes: bool = False,
    device: str = "auto",
    pixel_size: float | None = None,
    progress: bool = True,
) -> list[PickRecord]:
    """Pick every micrograph and write one coordinate file each (atomically)."""
    if fmt not in FORMATS:
        raise CryopickError(f"unknown --format {fmt!r} (use {', '.join(FORMATS)})")
    model, meta = load_picker(model_dir, resolve_device(device))
    box_size = box_size or round(meta.diameter * 1.5)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "pick_config.json",
        {"cryopick_version": __version__, "command": "pick", "model": str(model_dir), "format": fmt,
         "box_size": box_size, "pick": to_dict(cfg), "model_meta": meta.as_dict()},
    )
    records = []
    for mic in tqdm(micrographs, desc="pick", unit="mic", disable=not progress):
        t0 = time.monotonic()
        m = read_micrograph(mic, pixel_size)
        if meta.diameter >= min(m.shape):
            raise CryopickError(f"the model's particle diameter {meta.diameter:g} px is larger than this {m.shape[1]}x{m.shape[0]} micrograph", mic)
        binned = preprocess(m.data, meta.preprocess, m.pixel_size)
        xy, scores, heatmap = pick_binned(model, binned, meta, cfg)
        out = write_coords(output_path(out_dir, mic, fmt), xy, scores, fmt, box_size)
        if save_heatmaps:
            write_mrc(out_dir / "heatmaps" / f"{mic.stem}.mrc", heatmap, (m.pixel_size or 0) * binned.mean_scale or None)
        if boxes:
            thr = meta.threshold if cfg.threshold is None else cfg.threshold
            b = connected_boxes(heatmap, thr).astype(np.float64)
            b[:, [0, 2]] *= binned.scale[1]
            b[:, [1, 3]] *= binned.scale[0]
            lines = ["x0,y0,x1,y1"] + [",".join(f"{v:.1f}" for v in row) for row in b]
            write_text_atomic(out_dir / f"{mic.stem}_boxes.csv", "\n".join(lines) + "\n")
        records.append(PickRecord(mic, out, len(xy), time.monotonic() - t0))
    return records


@dataclass
class Evaluation:
    overall: Score
    curve: PRCurve
    per_micrograph: dict[str, Score]
    pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # stem -> (pred_xy, scores, true_xy)


def _coord_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        raise CryopickError("no such directory", directory)
    files: dict[str, Path] = {}
    for suffix in FORMATS.values():
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
    return Evaluation(summarize(curve, threshold), curve, per, pairs)


def find_truth(truth_dir: Path, stem: str) -> Path | None:
    return find_coords_file(truth_dir, stem)
