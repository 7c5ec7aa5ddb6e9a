"""The dashboard's labeling page, as plain functions: what to label, how it is shown, what a click does, saving.

A user opens a suggested region (or any unlabeled micrograph) with the latest round's picks drawn on it,
clicks a pick to remove it and empty space to add one, and saves: ``CAMPAIGN/labels/<stem>.star``
(:func:`cryopick.selftrain.labels.write_label`), which the next ``cryopick selftrain`` run takes in.
Starting from the model's picks, the user only corrects its errors. Coordinates are kept in the original
micrograph's pixels throughout; :class:`View` maps the displayed image's pixels to them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryopick.io.coords import Box
from cryopick.selftrain.acquisition import open_regions
from cryopick.selftrain.labels import Label, add_region, inside_boxes, read_labels, write_label
from cryopick.selftrain.state import CAMPAIGN_FILE, CampaignState, round_dir

MAX_SIDE = 800  # displayed px: a 4k micrograph is shown binned, a suggested region at full or near-full resolution


@dataclass(frozen=True)
class Target:
    """Something to label: a micrograph, or a box of it (original px)."""

    micrograph: Path
    box: Box | None = None
    why: str = ""

    @property
    def stem(self) -> str:
        return self.micrograph.stem

    @property
    def title(self) -> str:
        where = "whole micrograph" if self.box is None else "region " + ",".join(f"{v:g}" for v in self.box)
        return f"{self.stem}: {where}{f' ({self.why})' if self.why else ''}"


def targets(campaign: Path) -> list[Target]:
    """The latest round's suggestions (best first), then every other unlabeled micrograph, whole; what is labeled
    already is left out (of a micrograph labeled in regions, the regions not yet half labeled stay)."""
    stored = json.loads((campaign / CAMPAIGN_FILE).read_text())
    unlabeled = [Path(p) for p in stored.get("resolved", {}).get("unlabeled", [])]
    labels = read_labels(campaign)
    by_stem = {m.stem: m for m in unlabeled if m.stem not in labels}
    partial = {m.stem: m for m in unlabeled if m.stem in labels and labels[m.stem].boxes is not None}
    out: list[Target] = []
    state = CampaignState.load(campaign)
    sug = round_dir(campaign, state.completed_rounds[-1]) / "suggestions.csv" if state.completed_rounds else None
    if sug is not None and sug.is_file():
        with open(sug, newline="") as fh:
            for row in csv.DictReader(fh):
                stem = row["micrograph"]
                box = None if row["region"] == "whole" else Box.of([row[k] for k in ("x0", "y0", "x1", "y1")])
                if stem in partial and box is not None:  # a further region of a micrograph labeled in regions
                    if open_regions([box], labels[stem].boxes or ()):
                        out.append(Target(partial[stem], box, f"suggestion {row['rank']}"))
                elif stem in by_stem:
                    out.append(Target(by_stem[stem], box, f"suggestion {row['rank']}"))
    return out + [Target(m) for m in by_stem.values()]


@dataclass(frozen=True)
class View:
    """A displayed image of a target: ``image`` (h, w) uint8; displayed px × ``zoom`` + ``origin`` = original px."""

    image: np.ndarray
    origin: tuple[float, float]  # (x0, y0) original px of the displayed image's top-left corner
    zoom: float  # original px per displayed px

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A displayed pixel (its centre at +0.5) -> original micrograph px."""
        return self.origin[0] + (x + 0.5) * self.zoom, self.origin[1] + (y + 0.5) * self.zoom

    def to_display(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) original px -> displayed px."""
        return (np.asarray(xy, dtype=np.float64).reshape(-1, 2) - np.array(self.origin)) / self.zoom - 0.5


def make_view(data: np.ndarray, box: Box | None, max_side: int = MAX_SIDE) -> View:
    """Crop ``data`` (the micrograph, original px) to ``box``, bin it by a whole factor to at most ``max_side``, stretch contrast."""
    h, w = data.shape
    x0, y0, x1, y1 = (0.0, 0.0, float(w), float(h)) if box is None else box
    xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    xb, yb = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    crop = np.asarray(data[ya:yb, xa:xb], dtype=np.float32)
    k = max(1, int(np.ceil(max(crop.shape) / max_side)))
    hh, ww = crop.shape[0] // k * k, crop.shape[1] // k * k
    small = crop[:hh, :ww].reshape(hh // k, k, ww // k, k).mean(axis=(1, 3))
    lo, hi = np.percentile(small, [1, 99])
    image = np.clip((small - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    return View(image, (float(xa), float(ya)), float(k))


def toggle(picks: np.ndarray, xy: tuple[float, float], radius: float) -> np.ndarray:
    """A click at ``xy`` (original px): removes the nearest pick within ``radius``, else adds one there. (N, 2) -> (N±1, 2)."""
    picks = np.asarray(picks, dtype=np.float64).reshape(-1, 2)
    if len(picks):
        d = np.hypot(*(picks - np.asarray(xy)).T)
        i = int(np.argmin(d))
        if d[i] <= radius:
            return np.delete(picks, i, axis=0)
    return np.vstack([picks, np.asarray(xy, dtype=np.float64)[None]])


def inside(picks: np.ndarray, box: Box | None) -> np.ndarray:
    """The picks inside ``box`` (all without one)."""
    picks = np.asarray(picks, dtype=np.float64).reshape(-1, 2)
    return picks if box is None else picks[inside_boxes(picks, [box])]


def draw(view: View, picks: np.ndarray, radius: float) -> np.ndarray:
    """(h, w, 3) uint8: the view with a circle of ``radius`` original px at every pick."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(view.image).convert("RGB")
    pen = ImageDraw.Draw(img)
    r = max(2.0, radius / view.zoom)
    for x, y in view.to_display(picks):
        pen.ellipse((x - r, y - r, x + r, y + r), outline=(255, 200, 0), width=2)
    return np.asarray(img)


def save(campaign: Path, target: Target, picks: np.ndarray, replace: bool = False) -> Label:
    """Write the target's picks as the campaign's label of that micrograph (``write_label`` keeps the box's only);
    a region of a micrograph labeled in regions before is added to them."""
    if target.box is not None and not replace:
        return add_region(campaign, target.micrograph, picks, target.box, source="dashboard")
    return write_label(campaign, target.micrograph, picks, source="dashboard", replace=replace,
                       boxes=None if target.box is None else [target.box])


def waiting_labels(campaign: Path) -> list[str]:
    """Micrographs labeled in the campaign that no round has trained with yet."""
    trained = CampaignState.load(campaign).labels
    return sorted(stem for stem in read_labels(campaign) if stem not in trained)


def next_round_command(campaign: Path) -> str:
    """The command that trains with the new labels: the same campaign, one more round."""
    state = CampaignState.load(campaign)
    return f"cryopick selftrain --out {campaign} --rounds {len(state.completed_rounds) + 1}"
