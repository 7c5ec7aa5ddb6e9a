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
from cryopick.training.dataset import load_labeled, split_items
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
    amp: bool | None = None,
    threads: int | None = None,
    max_minutes: float | None = None,
    labels: str = "auto",
) -> TrainResult:
    """Train a picker on labeled micrographs; write model.pt, config.json, history and plots.

    The run is built in ``OUT/.partial/`` (its plan, config.json without a result, is there from the start)
    and its files replace the previous run's only when it has finished, config.json last, so ``OUT``
    always describes one run: a killed re-train leaves the previous run as it was. ``device``, ``amp``,
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
    train_items, val_items = split_items(labeled, val, diameter, train_cfg.val_fraction)
    border = learn_border([(lm.binned.to_original(lm.xy), lm.binned.original_shape) for lm in [*labeled, *val]], diameter)
    meta = PickerMeta(diameter=diameter, preprocess=pre, model=model_cfg, smooth_sigma=1.0, border=border)
    with OutputLock(output_dir(Path(out_dir))):  # one writer per run directory
        work = Path(out_dir) / PARTIAL
        shutil.rmtree(work, ignore_errors=True)  # a killed earlier attempt's (the lock says none is running)
        result = _train_into(work, micrographs, coords_dir, diameter, pre, model_cfg, train_cfg, val_micrographs, pixel_size,
                             train_items, val_items, meta, progress, time.monotonic() - t0,
                             dict(device=device, amp=amp, threads=threads, max_minutes=max_minutes, labels=labels))
        _publish(work, Path(out_dir))
    return result


def _train_into(work: Path, micrographs: Sequence[Path], coords_dir: Path, diameter: float, pre: PreprocessConfig,
                model_cfg: ModelConfig, train_cfg: TrainConfig, val_micrographs: Sequence[Path], pixel_size: float | None,
                train_items: list[Any], val_items: list[Any], meta: PickerMeta, progress: bool, load_s: float,
                runtime: dict[str, Any]) -> TrainResult:
    """Train and write the run's files into ``work``."""
    out_dir = work
    device, amp, threads, max_minutes = runtime["device"], runtime["amp"], runtime["threads"], runtime["max_minutes"]
    config = {
        "cryopick_version": __version__, "command": "train", "micrographs": [str(m) for m in micrographs],
        "val_micrographs": [str(m) for m in val_micrographs], "coords": str(coords_dir), "diameter": diameter,
        "pixel_size": pixel_size, "preprocess": to_dict(pre), "model": to_dict(model_cfg), "train": to_dict(train_cfg),
        "runtime": {"device": device, "amp": amp, "threads": threads, "max_minutes": max_minutes}, "labels": runtime["labels"],
    }
    write_json(out_dir / "config.json", config)  # the plan, before the long part
    result = train_picker(train_items, val_items, meta, train_cfg, out_dir, progress=progress, device=device, amp=amp,
                          threads=threads, max_minutes=max_minutes, labels=runtime["labels"])
    m = result.meta
    config["result"] = {
        "threshold": m.threshold, "min_distance": m.min_distance, "border": m.border, "val_f1": m.val_f1,
        "val_average_precision": result.val.average_precision if result.val else None, "best_step": result.best_step,
        "train_seconds": result.seconds, "load_seconds": load_s,
        "sparse_labels": result.val.sparse if result.val else None,  # the picks looked sparse (or --labels sparse)
        "picked_share": result.val.picked_share if result.val else None,
    }
    write_json(out_dir / "config.json", config)
    if result.val is not None and result.val.curve is not None:
        from cryopick.evaluation.plots import plot_pr_curves

        plot_pr_curves(out_dir / "val_pr.png", {"validation": result.val.curve}, "Validation precision-recall")
    return result


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
