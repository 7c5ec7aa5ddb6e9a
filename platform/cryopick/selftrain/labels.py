"""Labels that come back into a campaign: ``CAMPAIGN/labels/<stem>.star`` with a sidecar ``<stem>.json``.

A user labels a micrograph the campaign suggested, or regions of it (in another program or with
``cryopick label import``); the next ``cryopick selftrain --out CAMPAIGN`` moves it from the
unlabeled to the labeled set for the rounds it has still to run. The sidecar says which part is
labeled completely: the whole micrograph (``"complete": "whole"``) or boxes of it (``"complete":
{"boxes": [[x0, y0, x1, y1], ...]}`` in original px); outside the boxes nothing is taught, neither
particle nor background. A label file without a readable sidecar is refused rather than guessed at.
Files are written atomically; an existing label is replaced only when asked (``replace=True``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryopick.errors import CryopickError
from cryopick.io.atomic import write_json
from cryopick.io.coords import Box, inside_boxes, read_coords, write_coords

LABELS_DIR = "labels"


@dataclass(frozen=True)
class Label:
    """One micrograph's labels in a campaign: its picks (original px) and where they came from."""

    stem: str
    path: Path  # labels/<stem>.star
    micrograph: str
    source: str
    n_picks: int
    boxes: tuple[Box, ...] | None = None  # None: the whole micrograph is labeled


def labels_dir(campaign: Path) -> Path:
    return Path(campaign) / LABELS_DIR


def write_label(campaign: Path, micrograph: Path, xy: np.ndarray, source: str, replace: bool = False,
                boxes: Sequence[Box] | None = None) -> Label:
    """Write ``labels/<stem>.star`` (RELION coordinates, original px) and its sidecar.

    ``boxes``: the regions labeled completely (picks outside them are dropped); None: the whole micrograph.
    """
    star = labels_dir(campaign) / f"{micrograph.stem}.star"
    if star.exists() and not replace:
        raise CryopickError(f"{micrograph.stem} already has labels in this campaign (use --replace to overwrite them)", star)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if boxes is not None:
        boxes = tuple(Box.of(b) for b in boxes)
        xy = xy[inside_boxes(xy, boxes)]
    write_coords(star, xy)
    complete: Any = "whole" if boxes is None else {"boxes": [list(b) for b in boxes]}
    write_json(star.with_suffix(".json"), {"micrograph": str(micrograph), "complete": complete, "source": source,
                                           "n_picks": int(len(xy)), "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return Label(micrograph.stem, star, str(micrograph), source, int(len(xy)), None if boxes is None else tuple(boxes))


def add_region(campaign: Path, micrograph: Path, xy: np.ndarray, box: Box, source: str) -> Label:
    """Label one more region of ``micrograph``: its picks inside ``box`` join those of the regions labeled before.

    Inside ``box`` the new picks replace earlier ones (the latest look wins where regions overlap); a micrograph
    labeled whole has no region left to add (``write_label(..., replace=True)`` relabels it).
    """
    star = labels_dir(campaign) / f"{micrograph.stem}.star"
    if not star.exists():
        return write_label(campaign, micrograph, xy, source, boxes=[box])
    before = label_boxes(star)
    if before is None:
        raise CryopickError(f"{micrograph.stem} is labeled whole already: replace its labels to change them", star)
    old, _ = read_coords(star)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    merged = np.concatenate([old[~inside_boxes(old, [box])], xy[inside_boxes(xy, [box])]])
    box = Box.of(box)
    return write_label(campaign, micrograph, merged, source, replace=True, boxes=[*before, *([box] if box not in before else [])])


def label_boxes(star: Path) -> tuple[Box, ...] | None:
    """The regions a label file covers, from its sidecar: None for the whole micrograph (or no sidecar: expert picks)."""
    side = Path(star).with_suffix(".json")
    if not side.is_file():
        return None
    return _complete(json.loads(side.read_text()), side)


def _complete(meta: dict[str, Any], side: Path) -> tuple[Box, ...] | None:
    complete = meta.get("complete")
    if complete == "whole":
        return None
    boxes = complete.get("boxes") if isinstance(complete, dict) else None
    try:
        parsed = tuple(Box.of(b) for b in boxes or ())
    except (TypeError, ValueError, IndexError):
        parsed = ()
    if not parsed or any(x1 <= x0 or y1 <= y0 for x0, y0, x1, y1 in parsed):
        raise CryopickError(f"the sidecar's 'complete' must be \"whole\" or {{\"boxes\": [[x0, y0, x1, y1], ...]}}, got {complete!r}", side)
    return parsed


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
        boxes = _complete(meta, side)
        xy, _ = read_coords(star)
        out[star.stem] = Label(star.stem, star, str(meta.get("micrograph", "")), str(meta.get("source", "")), len(xy), boxes)
    return out


def import_labels(campaign: Path, files: Sequence[Path], micrographs: Sequence[Path], replace: bool = False,
                  boxes: Sequence[Box] | None = None) -> list[Label]:
    """Copy pick files (``.star`` from RELION, ``.box``, ``.csv``, ``.txt``) into ``campaign/labels``, matched by stem.

    ``boxes``: each file labels only these regions (original px) completely. Every file is read and
    matched before anything is written, so one bad file changes nothing.
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
    return [write_label(campaign, mic, xy, f"import:{f}", replace, boxes) for f, mic, xy in staged]
