"""A campaign's labeling suggestions: its latest round's model scores the unlabeled micrographs.

``cryopick suggest`` reads ``campaign.json`` (the unlabeled micrographs as resolved) and ``state.json``
(the completed rounds), predicts every unlabeled micrograph with the latest round's model and all its
test-time-augmentation views, scores micrographs or regions (:mod:`cryopick.selftrain.acquisition`)
and writes ``round_NNN/suggestions.csv`` atomically. After each round the campaign does the same for
a sample of them (:func:`suggestion_pool`) from the heatmaps its prediction stage already wrote.
Plain functions, no Ray.
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
from cryopick.inference.tiling import predict_heatmap_spread
from cryopick.io.micrograph import read_micrograph
from cryopick.preprocessing.binning import preprocess
from cryopick.io.coords import Box
from cryopick.selftrain.acquisition import DEFAULT_STRATEGY, Scored, open_regions, rank, region_boxes, score_maps
from cryopick.selftrain.labels import read_labels
from cryopick.selftrain.outputs import write_csv
from cryopick.selftrain.scoring import load_heatmap
from cryopick.selftrain.stages import read_calibration
from cryopick.selftrain.state import CAMPAIGN_FILE, CampaignState, round_dir

SUGGESTIONS_FILE = "suggestions.csv"
REGION_DIAMETERS = 10  # default region edge in particle diameters: a few dozen particles to correct
ROUND_SUGGESTIONS = 10  # suggestions a campaign writes after each round
ROUND_POOL = 32  # at most this many unlabeled micrographs (a seeded sample) are scored after each round
COLUMNS = ("rank", "micrograph", "region", "x0", "y0", "x1", "y1", "score", "uncertainty", "entropy", "disagreement",
           "expected_errors", "n_picks", "n_candidates")


@dataclass
class Suggestions:
    """What :func:`suggest` chose and where it wrote it."""

    round: int
    path: Path
    chosen: list[tuple[Scored, float]]
    n_candidates: int
    strategy: str


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
                      labeled: Mapping[str, Sequence[Box]] | None = None,
                      calibration: Sequence[float] | None = None) -> list[Scored]:
    """Every candidate (whole micrographs with ``region_size`` None, else their regions) scored by the model in ``model_file``.

    ``labeled``: regions already labeled (stem -> boxes, ORIGINAL px); the regions they cover are no candidates.
    ``calibration``: the round's peak calibration table, for the expected errors.
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
        heatmap, spread = predict_heatmap_spread(model, b.image, cfg)
        md = meta.resolved_min_distance() / b.mean_scale
        out += [score_maps(heatmap, spread, b.scale, m.name, meta.threshold, md, b.image, box, calibration) for box in boxes]
        if progress is not None:
            progress(f"scored {i + 1}/{len(mics)}: {m.name}")
    return out


def suggest(campaign: Path, n: int = 10, strategy: str | None = None, region_size: int | None = -1, seed: int = 0,
            progress: Callable[[str], None] | None = None) -> Suggestions:
    """Rank a campaign's unlabeled micrographs (or regions: ``region_size`` px, -1 = the default for the particle,
    None = whole micrographs) and write the latest round's ``suggestions.csv``; ``strategy`` None: the campaign's
    ``selftrain.suggest``, as its rounds rank."""
    campaign = Path(campaign)
    rnd = latest_round(campaign)
    stored = json.loads((campaign / CAMPAIGN_FILE).read_text())
    strategy = strategy or (stored.get("selftrain") or {}).get("suggest") or DEFAULT_STRATEGY
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
                                   regions, read_calibration(rdir).get("peak"))
    if not candidates:
        raise CryopickError("every region of the campaign's unlabeled micrographs is labeled", campaign / CAMPAIGN_FILE)
    chosen = rank(candidates, n, strategy, seed=seed)
    write_suggestions(rdir / SUGGESTIONS_FILE, chosen)
    return Suggestions(rnd, rdir / SUGGESTIONS_FILE, chosen, len(candidates), strategy)


def suggestion_pool(unlabeled: Sequence[Path], labeled: Sequence[Path] = (), seed: int = 0) -> list[Path]:
    """The micrographs a round scores for suggestions: at most ``ROUND_POOL`` (a ``seed``-ed sample) of the
    ``unlabeled`` ones and the ``labeled`` ones labeled in regions only."""
    mics = list(dict.fromkeys([*unlabeled, *labeled]))
    rng = np.random.default_rng(seed)
    return [mics[i] for i in sorted(rng.permutation(len(mics))[:ROUND_POOL])]


def round_suggestions(rdir: Path, heatmaps: Mapping[Path, Path], diameter: float, seed: int = 0,
                      labeled: Mapping[Path, Sequence[Box]] | None = None, strategy: str = DEFAULT_STRATEGY) -> Path | None:
    """A round's ``suggestions.csv`` from its own model's heatmaps, ranked by ``strategy`` (``selftrain.suggest``).

    Args:
        heatmaps: micrograph -> its ``.npz`` from the round's prediction stage (heatmap, scale, image and
            spread of the test-time-augmentation views); the micrographs of :func:`suggestion_pool`.
        labeled: micrographs labeled in regions only -> their labeled boxes (ORIGINAL px): only the
            regions still open are candidates.
    """
    if not heatmaps:
        return None
    _, meta = load_picker(rdir / MODEL_FILE)  # with the threshold this round stored
    calibration = read_calibration(rdir).get("peak")
    boxes = {Path(m).stem: b for m, b in (labeled or {}).items()}
    size = default_region_size(diameter)
    candidates: list[Scored] = []
    for mic, npz in heatmaps.items():
        sh = load_heatmap(npz)
        with np.load(npz) as z:
            if "spread" not in z:
                raise CryopickError("heatmap has no spread of its views (predicted by an older cryopick): delete it and "
                                    "rerun the campaign to predict it again", npz)
            spread = z["spread"].astype(np.float32)
        md = meta.resolved_min_distance() / sh.mean_scale
        regions = open_regions(region_boxes(sh.original_shape, size), boxes.get(Path(mic).stem, ()))
        candidates += [score_maps(sh.heatmap, spread, sh.scale, Path(mic).stem, meta.threshold, md, sh.image, box, calibration)
                       for box in regions]
    if not candidates:
        return None
    write_suggestions(rdir / SUGGESTIONS_FILE, rank(candidates, ROUND_SUGGESTIONS, strategy, seed=seed))
    return rdir / SUGGESTIONS_FILE


def write_suggestions(path: Path, chosen: Sequence[tuple[Scored, float]]) -> None:
    """``suggestions.csv``: one row per suggestion, best first (region "whole" or "x0,y0,x1,y1" in original px)."""
    rows = []
    for i, (s, score) in enumerate(chosen, 1):
        b = s.box
        coords = ("", "", "", "") if b is None else (b.x0, b.y0, b.x1, b.y1)
        region = "whole" if b is None else f"{b.x0},{b.y0},{b.x1},{b.y1}"
        rows.append((i, s.micrograph, region, *coords, f"{score:.4f}", f"{s.uncertainty:.4f}", f"{s.entropy:.4f}",
                     f"{s.disagreement:.4f}", f"{s.expected_errors:.2f}", s.n_picks, s.n_candidates))
    write_csv(path, COLUMNS, rows)
