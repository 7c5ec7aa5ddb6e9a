"""``cryopick pick`` behind the CLI: pick a list of micrograph files into one coordinate file each.

Plain functions (no Ray); every micrograph goes through :func:`cryopick.inference.picker.pick_micrograph`.
For a whole data set (resumable, fault tolerant, RELION index) see :mod:`cryopick.batch`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cryopick import __version__
from cryopick.config import PickConfig, to_dict
from cryopick.errors import CryopickError
from cryopick.inference.peaks import connected_boxes
from cryopick.inference.picker import load_picker, pick_micrograph
from cryopick.inference.tiling import resolve_device
from cryopick.io.atomic import write_json, write_text_atomic
from cryopick.io.coords import FORMATS, write_coords
from cryopick.io.lock import OutputLock
from cryopick.io.manifest import check_unique_stems, output_dir
from cryopick.io.micrograph import read_micrograph, write_mrc
from cryopick.runtime import resolve_amp


@dataclass
class PickRecord:
    micrograph: Path
    output: Path
    n_picks: int
    seconds: float


def output_path(out_dir: Path, micrograph: Path, fmt: str) -> Path:
    return out_dir / f"{micrograph.stem}{FORMATS[fmt].suffix}"


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
    check_unique_stems(micrographs)  # every input is checked before anything is written
    dev = resolve_device(device)
    model, meta = load_picker(model_dir, dev)
    cfg = replace(cfg, amp=resolve_amp(cfg.amp, dev.type))  # pick_config.json records the precision used
    box_size = box_size or round(meta.diameter * 1.5)
    with OutputLock(output_dir(out_dir)):  # one writer per output directory
        write_json(
            out_dir / "pick_config.json",
            {"cryopick_version": __version__, "command": "pick", "model": str(model_dir), "format": fmt,
             "box_size": box_size, "pick": to_dict(cfg), "model_meta": meta.as_dict()},
        )
        records = []
        for mic in tqdm(micrographs, desc="pick", unit="mic", disable=not progress):
            t0 = time.monotonic()
            m = read_micrograph(mic, pixel_size)
            picked = pick_micrograph(model, meta, m, cfg)
            xy, scores, heatmap, binned = picked.xy, picked.scores, picked.heatmap, picked.binned
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
