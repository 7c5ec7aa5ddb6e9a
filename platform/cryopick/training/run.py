"""``cryopick train`` behind the CLI: labeled micrograph files -> a saved picker in a run directory.

Plain functions (no Ray). Writes ``model.pt``, the resolved ``config.json``, ``history.csv`` and
``val_pr.png`` into the run directory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryopick import __version__
from cryopick.config import ModelConfig, PreprocessConfig, TrainConfig, to_dict
from cryopick.errors import CryopickError
from cryopick.inference.border import learn_border
from cryopick.inference.picker import PickerMeta
from cryopick.io.atomic import write_json
from cryopick.io.lock import OutputLock
from cryopick.io.manifest import output_dir
from cryopick.preprocessing.binning import resolve_binning
from cryopick.evaluation.metrics import SPARSE_SHARE, sparse_note
from cryopick.preprocessing.labels import disk_cover, unpicked_prior
from cryopick.training.dataset import LabeledMicrograph, load_labeled, split_items
from cryopick.training.loop import TrainResult, train_picker
from cryopick.training.patches import patch_size_for


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
    *,
    device: str = "auto",
    threads: int | None = None,
    max_minutes: float | None = None,
    labels: str = "auto",
    expected_particles: float | None = None,
) -> TrainResult:
    """Train a picker on labeled micrographs; write model.pt, config.json, history and plots.

    ``expected_particles``: particles a micrograph holds, picked or not (as Topaz's ``-n``). With it the picked
    share is known; sparse picks (``labels`` sparse, or auto and a share below ``SPARSE_SHARE``) then teach the
    unpicked pixels as positive-unlabeled (:func:`positive_unlabeled_plan`) instead of as background.

    The run is built in ``OUT/.partial/`` (its plan, config.json without a result, is there from the start)
    and its files replace the previous run's only when it has finished, config.json last, so ``OUT``
    always describes one run: a killed re-train leaves the previous run as it was. ``device``,
    ``threads``, ``max_minutes`` and ``labels`` (complete | sparse | auto) are passed to :func:`train_picker`.
    """
    if diameter <= 0:
        raise CryopickError(f"--diameter must be positive, got {diameter:g}")
    t0 = time.monotonic()
    pre = resolve_binning(pre, diameter)
    labeled = [load_labeled(m, coords_dir, diameter, pre, pixel_size) for m in micrographs]
    val = [load_labeled(m, coords_dir, diameter, pre, pixel_size) for m in val_micrographs]
    if train_cfg.patch_size is None:  # several particles per patch, at the binning just resolved
        train_cfg = replace(train_cfg, patch_size=patch_size_for(diameter / labeled[0].binned.mean_scale, 2**model_cfg.depth))
    share, prior = positive_unlabeled_plan(labeled, diameter, labels, expected_particles)
    if share is not None and prior > 0:
        if labels == "auto":
            print(sparse_note(share, "unpicked areas are learned as partly particle and the threshold is set for sparse picks",
                              expected=True))
        labels = "sparse"  # the threshold, too, is chosen for sparse picks
    train_items, val_items = split_items(labeled, val, diameter, train_cfg.val_fraction, positive_unlabeled=prior > 0)
    border = learn_border([(lm.binned.to_original(lm.xy), lm.binned.original_shape) for lm in [*labeled, *val]], diameter)
    meta = PickerMeta(diameter=diameter, preprocess=pre, model=model_cfg, smooth_sigma=1.0, border=border)
    with OutputLock(output_dir(Path(out_dir))):  # one writer per run directory
        work = Path(out_dir) / PARTIAL
        shutil.rmtree(work, ignore_errors=True)  # a killed earlier attempt's (the lock says none is running)
        result = _train_into(work, micrographs, coords_dir, diameter, pre, model_cfg, train_cfg, val_micrographs, pixel_size,
                             train_items, val_items, meta, progress, time.monotonic() - t0,
                             dict(device=device, threads=threads, max_minutes=max_minutes, labels=labels,
                                  expected_particles=expected_particles, share=share, prior=prior))
        _publish(work, Path(out_dir))
    return result


def _train_into(work: Path, micrographs: Sequence[Path], coords_dir: Path, diameter: float, pre: PreprocessConfig,
                model_cfg: ModelConfig, train_cfg: TrainConfig, val_micrographs: Sequence[Path], pixel_size: float | None,
                train_items: list[Any], val_items: list[Any], meta: PickerMeta, progress: bool, load_s: float,
                runtime: dict[str, Any]) -> TrainResult:
    """Train and write the run's files into ``work``."""
    out_dir = work
    device, threads, max_minutes = runtime["device"], runtime["threads"], runtime["max_minutes"]
    config = {
        "cryopick_version": __version__, "command": "train", "micrographs": [str(m) for m in micrographs],
        "val_micrographs": [str(m) for m in val_micrographs], "coords": str(coords_dir), "diameter": diameter,
        "pixel_size": pixel_size, "preprocess": to_dict(pre), "model": to_dict(model_cfg), "train": to_dict(train_cfg),
        "runtime": {"device": device, "threads": threads, "max_minutes": max_minutes}, "labels": runtime["labels"],
        "expected_particles": runtime["expected_particles"],
    }
    write_json(out_dir / "config.json", config)  # the plan, before the long part
    result = train_picker(train_items, val_items, meta, train_cfg, out_dir, progress=progress, device=device,
                          threads=threads, max_minutes=max_minutes, labels=runtime["labels"], prior=runtime["prior"],
                          expected=runtime["expected_particles"] if runtime["prior"] > 0 else None)
    m = result.meta
    config["result"] = {
        "threshold": m.threshold, "min_distance": m.min_distance, "border": m.border, "val_f1": m.val_f1,
        "val_average_precision": result.val.average_precision if result.val else None, "best_step": result.best_step,
        "train_seconds": result.seconds, "load_seconds": load_s,
        "sparse_labels": result.val.sparse if result.val else None,  # the picks looked sparse (or --labels sparse)
        "picked_share": runtime["share"] if runtime["share"] is not None else result.val.picked_share if result.val else None,
        "unpicked_prior": runtime["prior"] or None,
    }
    write_json(out_dir / "config.json", config)
    if result.val is not None and result.val.curve is not None:
        from cryopick.evaluation.plots import plot_pr_curves

        plot_pr_curves(out_dir / "val_pr.png", {"validation": result.val.curve}, "Validation precision-recall")
    return result


def positive_unlabeled_plan(labeled: Sequence[LabeledMicrograph], diameter: float, labels: str,
                            expected_particles: float | None) -> tuple[float | None, float]:
    """(picked share from ``expected_particles`` or None, positive-unlabeled prior or 0) for these picks.

    The share is the picks per micrograph ÷ the particles expected on one (at most 1); the prior is
    :func:`cryopick.preprocessing.labels.unpicked_prior` of the picks' disk cover, where the picks are sparse:
    ``labels`` sparse, or auto and the share below ``SPARSE_SHARE``; 0 for complete labels.
    """
    if expected_particles is None or not labeled:
        return None, 0.0
    if expected_particles <= 0:
        raise CryopickError(f"--expected-particles must be positive, got {expected_particles:g}")
    picks = sum(len(lm.xy) for lm in labeled)
    share = min(1.0, picks / len(labeled) / expected_particles)
    if labels == "complete" or (labels == "auto" and share >= SPARSE_SHARE):
        return share, 0.0
    area = sum(lm.binned.original_shape[0] * lm.binned.original_shape[1] for lm in labeled)
    return share, unpicked_prior(disk_cover(picks / area, diameter), share)


PARTIAL = ".partial"
RUN_FILES = ("model.pt", "history.csv", "val_pr.png", "config.json")  # config.json last: it says the run is whole


def _publish(work: Path, out: Path) -> None:
    """Move a finished run's files from ``work`` into ``out``, replacing the previous run's, config.json last."""
    for name in RUN_FILES:
        if (work / name).is_file():
            os.replace(work / name, out / name)
        elif name != "config.json":
            (out / name).unlink(missing_ok=True)  # the previous run's, which this run did not make
    shutil.rmtree(work, ignore_errors=True)
