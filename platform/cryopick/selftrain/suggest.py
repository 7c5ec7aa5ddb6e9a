"""A campaign's labeling suggestions: its latest round's model scores the unlabeled micrographs.

Reads ``campaign.json`` (the unlabeled micrographs as resolved) and ``state.json`` (the completed
rounds), predicts every unlabeled micrograph with the latest round's model and all its
test-time-augmentation views, scores micrographs or regions (:mod:`cryopick.selftrain.acquisition`)
and writes ``round_NNN/suggestions.csv`` atomically. Plain functions, no Ray.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryopick.config import HeatmapConfig, from_dict
from cryopick.errors import CryopickError
from cryopick.inference.picker import MODEL_FILE, load_picker
from cryopick.inference.tiling import predict_views
from cryopick.io.micrograph import read_micrograph
from cryopick.preprocessing.binning import preprocess
from cryopick.io.coords import Box
from cryopick.selftrain.acquisition import Scored, open_regions, rank, region_boxes, score_views
from cryopick.selftrain.labels import read_labels
from cryopick.selftrain.outputs import write_csv
from cryopick.selftrain.state import CAMPAIGN_FILE, CampaignState, round_dir

SUGGESTIONS_FILE = "suggestions.csv"
REGION_DIAMETERS = 10  # default region edge in particle diameters: a few dozen particles to correct
ROUND_SUGGESTIONS = 10  # suggestions a campaign writes after each round
ROUND_POOL = 32  # at most this many unlabeled micrographs (a seeded sample) are scored after each round
COLUMNS = ("rank", "micrograph", "region", "x0", "y0", "x1", "y1", "score", "uncertainty", "entropy", "disagreement",
           "n_picks", "n_candidates")


@dataclass
class Suggestions:
    """What :func:`suggest` chose and where it wrote it."""

    round: int
    path: Path
    chosen: list[tuple[Scored, float]]
    n_candidates: int


def default_region_size(diameter: float) -> int:
    """Region edge (original px) for a particle of ``diameter`` px."""
    return max(64, int(round(REGION_DIAMETERS * diameter)))


def latest_round(campaign: Path) -> int:
    """The last completed round of ``campaign``, or a clear error."""
    if not (campaign / CAMPAIGN_FILE).is_file():
        raise CryopickError("not a campaign directory (no campaign.json)", campaign)
    state = CampaignState.load(campaign)
    if not state.completed_rounds:
        raise CryopickError("the campaign has no completed round yet: run `cryopick selftrain` first", campaign)
    return state.completed_rounds[-1]


def score_micrographs(model_file: Path, mics: Sequence[Path], cfg: HeatmapConfig, pixel_size: float | None,
                      region_size: int | None, progress: Callable[[str], None] | None = None,
                      labeled: Mapping[str, Sequence[Box]] | None = None) -> list[Scored]:
    """Every candidate (whole micrographs with ``region_size`` None, else their regions) scored by the model in ``model_file``.

    ``labeled``: regions already labeled (stem -> boxes, ORIGINAL px); the regions they cover are no candidates.
    """
    model, meta = load_picker(model_file)
    labeled = labeled or {}
    out: list[Scored] = []
    for i, path in enumerate(mics):
        m = read_micrograph(path, pixel_size)
        boxes: list[Box | None] = [None]
        if region_size is not None:
            boxes = list(open_regions(region_boxes(m.shape, region_size), labeled.get(m.name, ())))
        if not boxes:
            continue
        b = preprocess(m.data, meta.preprocess, m.pixel_size)
        views = predict_views(model, b.image, cfg)
        md = meta.resolved_min_distance() / b.mean_scale
        out += [score_views(views, b.scale, m.name, meta.threshold, md, b.image, box) for box in boxes]
        if progress is not None:
            progress(f"scored {i + 1}/{len(mics)}: {m.name}")
    return out


def suggest(campaign: Path, n: int = 10, strategy: str = "combined", region_size: int | None = -1, seed: int = 0,
            progress: Callable[[str], None] | None = None) -> Suggestions:
    """Rank a campaign's unlabeled micrographs (or regions: ``region_size`` px, -1 = the default for the particle,
    None = whole micrographs) and write the latest round's ``suggestions.csv``."""
    campaign = Path(campaign)
    rnd = latest_round(campaign)
    stored = json.loads((campaign / CAMPAIGN_FILE).read_text())
    labels = read_labels(campaign)  # labeled since the campaign started: nothing left to suggest there but other regions
    regions = {stem: lab.boxes for stem, lab in labels.items() if lab.boxes is not None}
    mics = [Path(p) for p in stored["resolved"]["unlabeled"] if Path(p).stem not in labels or Path(p).stem in regions]
    if not mics:
        raise CryopickError("the campaign has no unlabeled micrographs to suggest from", campaign / CAMPAIGN_FILE)
    if region_size == -1:
        region_size = default_region_size(float(stored["data"]["diameter"]))
    cfg = from_dict(HeatmapConfig, stored.get("predict") or {}, "predict")
    rdir = round_dir(campaign, rnd)
    if region_size is None:  # a whole micrograph that is labeled in part is no candidate
        mics = [m for m in mics if m.stem not in regions]
    candidates = score_micrographs(rdir / MODEL_FILE, mics, cfg, (stored.get("data") or {}).get("pixel_size"), region_size, progress,
                                   regions)
    if not candidates:
        raise CryopickError("every region of the campaign's unlabeled micrographs is labeled", campaign / CAMPAIGN_FILE)
    chosen = rank(candidates, n, strategy, seed=seed)
    write_suggestions(rdir / SUGGESTIONS_FILE, chosen)
    return Suggestions(rnd, rdir / SUGGESTIONS_FILE, chosen, len(candidates))


def round_suggestions(rdir: Path, unlabeled: Sequence[Path], cfg: HeatmapConfig, pixel_size: float | None,
                      diameter: float, seed: int = 0, labeled: Mapping[Path, Sequence[Box]] | None = None) -> Path | None:
    """A round's ``suggestions.csv`` from its own model: regions of at most ``ROUND_POOL`` unlabeled micrographs, and
    of the ``labeled`` ones labeled in regions only (micrograph -> its labeled boxes) the regions still open."""
    mics = list(unlabeled) + list(labeled or {})
    if not mics:
        return None
    rng = np.random.default_rng(seed)
    pool = [mics[i] for i in sorted(rng.permutation(len(mics))[:ROUND_POOL])]
    boxes = {Path(m).stem: b for m, b in (labeled or {}).items()}
    candidates = score_micrographs(rdir / MODEL_FILE, pool, cfg, pixel_size, default_region_size(diameter), labeled=boxes)
    if not candidates:
        return None
    write_suggestions(rdir / SUGGESTIONS_FILE, rank(candidates, ROUND_SUGGESTIONS, "combined", seed=seed))
    return rdir / SUGGESTIONS_FILE


def write_suggestions(path: Path, chosen: Sequence[tuple[Scored, float]]) -> None:
    """``suggestions.csv``: one row per suggestion, best first (region "whole" or "x0,y0,x1,y1" in original px)."""
    rows = []
    for i, (s, score) in enumerate(chosen, 1):
        b = s.box
        coords = ("", "", "", "") if b is None else (b.x0, b.y0, b.x1, b.y1)
        region = "whole" if b is None else f"{b.x0},{b.y0},{b.x1},{b.y1}"
        rows.append((i, s.micrograph, region, *coords, f"{score:.4f}", f"{s.uncertainty:.4f}", f"{s.entropy:.4f}",
                     f"{s.disagreement:.4f}", s.n_picks, s.n_candidates))
    write_csv(path, COLUMNS, rows)
