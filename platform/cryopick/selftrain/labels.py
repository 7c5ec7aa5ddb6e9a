"""Labels that come back into a campaign: ``CAMPAIGN/labels/<stem>.star`` with a sidecar ``<stem>.json``.

A user labels a micrograph the campaign suggested (in another program or with ``cryopick label
import``); the next ``cryopick selftrain --out CAMPAIGN`` moves it from the unlabeled to the labeled
set for the rounds it has still to run. The sidecar says which part is labeled completely: today
the whole micrograph (``"complete": "whole"``); where it is absent or says otherwise the file is
refused rather than misread. Files are written atomically; an existing label is replaced only when
asked (``replace=True``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryopick.errors import CryopickError
from cryopick.io.atomic import write_json
from cryopick.io.coords import read_coords, write_coords

LABELS_DIR = "labels"


@dataclass(frozen=True)
class Label:
    """One micrograph's labels in a campaign: its picks (original px) and where they came from."""

    stem: str
    path: Path  # labels/<stem>.star
    micrograph: str
    source: str
    n_picks: int


def labels_dir(campaign: Path) -> Path:
    return Path(campaign) / LABELS_DIR


def write_label(campaign: Path, micrograph: Path, xy: np.ndarray, source: str, replace: bool = False) -> Label:
    """Write ``labels/<stem>.star`` (RELION coordinates, original px) and its sidecar; the whole micrograph is labeled."""
    star = labels_dir(campaign) / f"{micrograph.stem}.star"
    if star.exists() and not replace:
        raise CryopickError(f"{micrograph.stem} already has labels in this campaign (use --replace to overwrite them)", star)
    write_coords(star, np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    write_json(star.with_suffix(".json"), {"micrograph": str(micrograph), "complete": "whole", "source": source,
                                           "n_picks": int(len(xy)), "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return Label(micrograph.stem, star, str(micrograph), source, int(len(xy)))


def read_labels(campaign: Path) -> dict[str, Label]:
    """Every label in ``campaign/labels``, by micrograph stem."""
    out: dict[str, Label] = {}
    folder = labels_dir(campaign)
    if not folder.is_dir():
        return out
    for star in sorted(folder.glob("*.star")):
        side = star.with_suffix(".json")
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            raise CryopickError("label file without a readable sidecar (.json saying which part is labeled)", star) from None
        if meta.get("complete") != "whole":
            raise CryopickError(f"labels of part of a micrograph ({meta.get('complete')!r}) are not supported yet", side)
        xy, _ = read_coords(star)
        out[star.stem] = Label(star.stem, star, str(meta.get("micrograph", "")), str(meta.get("source", "")), len(xy))
    return out


def import_labels(campaign: Path, files: Sequence[Path], micrographs: Sequence[Path], replace: bool = False) -> list[Label]:
    """Copy pick files (``.star`` from RELION, ``.box``, ``.csv``, ``.txt``) into ``campaign/labels``, matched by stem.

    Every file is read and matched before anything is written, so one bad file changes nothing.
    """
    by_stem = {Path(m).stem: Path(m) for m in micrographs}
    staged: list[tuple[Path, Path, np.ndarray]] = []
    for f in files:
        f = Path(f)
        mic = by_stem.get(f.stem)
        if mic is None:
            raise CryopickError(f"no unlabeled micrograph of the campaign is named {f.stem}", f)
        xy, _ = read_coords(f)
        if not replace and (labels_dir(campaign) / f"{f.stem}.star").exists():
            raise CryopickError(f"{f.stem} already has labels in this campaign (use --replace to overwrite them)", f)
        staged.append((f, mic, xy))
    return [write_label(campaign, mic, xy, f"import:{f}", replace) for f, mic, xy in staged]
