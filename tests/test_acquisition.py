"""Acquisition scores on hand-made heatmaps, and `cryopick suggest` on a small campaign directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cryopick.cli.__main__ import main
from cryopick.config import ModelConfig
from cryopick.inference.picker import PickerMeta, save_picker
from cryopick.model.unet import build_unet
from cryopick.io.coords import Box
from cryopick.selftrain.acquisition import DEFAULT_STRATEGY, expected_errors, open_regions, rank, region_boxes, score_views
from cryopick.selftrain.labels import import_labels
from cryopick.selftrain.state import CampaignState
from conftest import mic_paths


def blobs(shape: tuple[int, int], centres: list[tuple[int, int]], heights: list[float], sigma: float = 2.0) -> np.ndarray:
    """A heatmap with Gaussian peaks of the given heights at (x, y) centres."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    out = np.zeros(shape, np.float32)
    for (x, y), h in zip(centres, heights):
        out = np.maximum(out, h * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    return out


CENTRES = [(x, y) for x in range(12, 120, 24) for y in range(12, 120, 24)]


def test_an_unsure_micrograph_ranks_above_a_confident_one() -> None:
    confident = blobs((128, 128), CENTRES, [0.97] * len(CENTRES))[None]
    unsure = blobs((128, 128), CENTRES, [0.45, 0.55] * (len(CENTRES) // 2) + [0.5] * (len(CENTRES) % 2))[None]
    a = score_views(confident, (1.0, 1.0), "confident", threshold=0.5, min_distance=6)
    b = score_views(unsure, (1.0, 1.0), "unsure", threshold=0.5, min_distance=6)
    assert a.n_candidates == b.n_candidates == len(CENTRES)
    assert a.uncertainty == 0.0 and b.uncertainty == 1.0 and b.entropy > 0.9 > 0.3 > a.entropy
    for strategy in ("combined", "uncertainty"):
        assert [s.micrograph for s, _ in rank([a, b], 2, strategy)] == ["unsure", "confident"]


def test_expected_errors_count_the_corrections_a_region_needs() -> None:
    """Σ 1 − c over picks and c over the rest: many doubtful peaks outrank a few, and confident ones cost nothing."""
    assert expected_errors(np.array([0.9, 0.6, 0.3, 0.1]), 0.5) == pytest.approx(0.1 + 0.4 + 0.3 + 0.1)
    # with a calibration table, c is the calibrated precision: every peak a true particle -> only the non-picks count
    assert expected_errors(np.array([0.9, 0.6, 0.3, 0.1]), 0.5, [1.0] * 10) == pytest.approx(2.0)
    assert expected_errors(np.zeros(0), 0.5) == 0.0
    few = blobs((128, 128), CENTRES[:3], [0.45, 0.55, 0.5])[None]
    many = blobs((128, 128), CENTRES, [0.45, 0.55] * (len(CENTRES) // 2) + [0.5] * (len(CENTRES) % 2))[None]
    sure = blobs((128, 128), CENTRES, [0.99] * len(CENTRES))[None]
    scored = [score_views(m, (1.0, 1.0), name, 0.5, 6) for name, m in (("few", few), ("many", many), ("sure", sure))]
    assert scored[1].expected_errors == pytest.approx(24 * 0.45 + 0.5, abs=0.05) and scored[2].expected_errors < 0.3
    assert [s.micrograph for s, _ in rank(scored, 3, "errors", diversity=False)] == ["many", "few", "sure"]
    # the mean-based combined score cannot tell three doubtful peaks from twenty-five
    assert scored[0].uncertainty == scored[1].uncertainty == 1.0


def test_view_disagreement_is_the_spread_of_the_augmented_views_at_the_peaks() -> None:
    base = blobs((64, 64), [(20, 20), (44, 44)], [0.8, 0.8])
    agree = np.stack([base] * 8)
    differ = np.stack([base * f for f in np.linspace(0.6, 1.0, 8)])
    s_agree = score_views(agree, (1.0, 1.0), "agree", 0.5, 6)
    s_differ = score_views(differ, (1.0, 1.0), "differ", 0.5, 6)
    assert s_agree.disagreement == pytest.approx(0.0, abs=1e-6)
    assert s_differ.disagreement == pytest.approx(float(np.std(0.8 * np.linspace(0.6, 1.0, 8))), rel=1e-3)
    assert [s.micrograph for s, _ in rank([s_agree, s_differ], 2, "disagreement")] == ["differ", "agree"]


def test_diversity_separates_duplicates() -> None:
    """Two copies of the most uncertain micrograph: without diversity both are chosen, with it the second is not."""
    rng = np.random.default_rng(0)
    maps = [blobs((128, 128), CENTRES, list(np.clip(level + rng.normal(0, 0.01, len(CENTRES)), 0, 1)))
            for level in (0.5, 0.62, 0.75, 0.9)]
    maps.insert(1, maps[0].copy())  # m1 is an exact copy of m0
    scored = [score_views(hm[None], (1.0, 1.0), f"m{i}", 0.5, 6, image=hm) for i, hm in enumerate(maps)]
    plain = [s.micrograph for s, _ in rank(scored, 2, "combined", diversity=False)]
    diverse = [s.micrograph for s, _ in rank(scored, 2, "combined", diversity=True)]
    assert sorted(plain) == ["m0", "m1"]  # the exact duplicates score the same, above the rest
    assert diverse[0] in ("m0", "m1") and diverse[1] not in ("m0", "m1")
    chosen = rank(scored, 5, "combined")
    assert chosen[-1][1] == 0.0 and chosen[-1][0].micrograph in ("m0", "m1")  # a duplicate of a chosen one is worth 0


def test_random_is_a_seeded_permutation_and_regions_tile_the_micrograph() -> None:
    scored = [score_views(np.zeros((1, 32, 32), np.float32), (1.0, 1.0), f"m{i}", 0.5, 4) for i in range(6)]
    a, b = rank(scored, 6, "random", seed=1), rank(scored, 6, "random", seed=1)
    assert [s.micrograph for s, _ in a] == [s.micrograph for s, _ in b]
    assert sorted(s.micrograph for s, _ in a) == [f"m{i}" for i in range(6)]
    with pytest.raises(ValueError, match="unknown strategy"):
        rank(scored, 2, "best")
    boxes = region_boxes((1000, 700), 256)
    cover = np.zeros((1000, 700), bool)
    for bx in boxes:
        assert bx.x1 - bx.x0 == 256 and bx.y1 - bx.y0 == 256
        cover[bx.y0 : bx.y1, bx.x0 : bx.x1] = True
    assert cover.all() and len(boxes) == 4 * 3
    # a region is open unless at least half of it is labeled already
    assert open_regions([Box(0, 0, 100, 100), Box(100, 0, 200, 100)], [(0, 0, 140, 100)]) == [Box(100, 0, 200, 100)]
    assert open_regions([Box(0, 0, 100, 100)], [(0, 0, 100, 49)]) == [Box(0, 0, 100, 100)]
    # a region's scores come from its part of the heatmap (binned 2x: region px / 2)
    hm = np.zeros((1, 64, 64), np.float32)
    hm[0] = blobs((64, 64), [(48, 48)], [0.5])
    inside = score_views(hm, (2.0, 2.0), "m", 0.5, 4, box=Box(64, 64, 128, 128))
    outside = score_views(hm, (2.0, 2.0), "m", 0.5, 4, box=Box(0, 0, 64, 64))
    assert inside.n_candidates == 1 and outside.n_candidates == 0


def test_suggest_cli_writes_the_ranking_into_the_latest_round(sim_data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    campaign = tmp_path / "campaign"
    unlabeled = [str(p) for p in mic_paths(sim_data, ["sim_0001", "sim_0002"])]
    (campaign / "round_001").mkdir(parents=True)
    (campaign / "campaign.json").write_text(json.dumps({
        "data": {"diameter": 24.0, "pixel_size": None}, "predict": {"tta": 4},
        "resolved": {"labeled": [], "unlabeled": unlabeled, "validation": [], "test": []}}))
    state = CampaignState()
    state.record(0, 0.5, 0.5)
    state.record(1, 0.6, 0.6)
    state.save(campaign)
    torch.manual_seed(0)
    save_picker(campaign / "round_001", build_unet(ModelConfig(base_width=4)), PickerMeta(diameter=24.0, model=ModelConfig(base_width=4), threshold=0.5))
    assert main(["suggest", "--campaign", str(campaign), "-n", "3", "--region-size", "128", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"round 1: 3 of 8 candidates ({DEFAULT_STRATEGY})")  # 2 micrographs of 256² in 128-px regions
    rows = list(csv.DictReader(open(campaign / "round_001" / "suggestions.csv")))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert all(r["micrograph"] in ("sim_0001", "sim_0002") and int(r["x1"]) - int(r["x0"]) == 128 for r in rows)
    assert float(rows[0]["score"]) >= float(rows[1]["score"]) >= float(rows[2]["score"])
    stored = json.loads((campaign / "campaign.json").read_text())
    (campaign / "campaign.json").write_text(json.dumps({**stored, "selftrain": {"suggest": "errors"}}))
    assert main(["suggest", "--campaign", str(campaign), "-n", "8", "--region-size", "128", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("round 1: 8 of 8 candidates (errors)")  # the campaign's own strategy
    assert main(["suggest", "--campaign", str(campaign), "-n", "2", "--region-size", "128", "--strategy", "random", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("round 1: 2 of 8 candidates (random)")  # --strategy overrides the campaign's
    assert main(["suggest", "--campaign", str(campaign), "-n", "8", "--region-size", "128", "--quiet"]) == 0
    capsys.readouterr()
    (campaign / "campaign.json").write_text(json.dumps(stored))
    rows = list(csv.DictReader(open(campaign / "round_001" / "suggestions.csv")))
    errors = [float(r["expected_errors"]) for r in rows]
    assert [float(r["score"]) for r in rows][0] == pytest.approx(max(errors), abs=0.01)  # ranked by the expected errors
    assert main(["suggest", "--campaign", str(campaign), "-n", "5", "--whole", "--quiet"]) == 0
    rows = list(csv.DictReader(open(campaign / "round_001" / "suggestions.csv")))
    assert len(rows) == 2 and {r["region"] for r in rows} == {"whole"}  # only 2 micrographs to suggest
    import_labels(campaign, [sim_data / "coords" / "sim_0001.star"], [Path(p) for p in unlabeled])
    assert main(["suggest", "--campaign", str(campaign), "-n", "5", "--whole", "--quiet"]) == 0
    rows = list(csv.DictReader(open(campaign / "round_001" / "suggestions.csv")))
    assert [r["micrograph"] for r in rows] == ["sim_0002"]  # a micrograph labeled since is not suggested again
    import_labels(campaign, [sim_data / "coords" / "sim_0002.star"], [Path(p) for p in unlabeled], boxes=[(0, 0, 128, 128)])
    assert main(["suggest", "--campaign", str(campaign), "-n", "8", "--region-size", "128", "--quiet"]) == 0
    rows = list(csv.DictReader(open(campaign / "round_001" / "suggestions.csv")))
    # sim_0001 is labeled whole; of sim_0002 the three regions outside its labeled box are still open
    assert sorted(r["region"] for r in rows) == ["0,128,128,256", "128,0,256,128", "128,128,256,256"]
    assert {r["micrograph"] for r in rows} == {"sim_0002"}
    assert main(["suggest", "--campaign", str(tmp_path / "nothing")]) == 2
    assert "not a campaign directory" in capsys.readouterr().err


def test_round_suggestions_score_the_heatmaps_the_prediction_stage_wrote(sim_data: Path, tmp_path: Path) -> None:
    """A round scores its suggestion pool from the prediction stage's heatmaps (mean and spread of the views,
    no second prediction), as `cryopick suggest` scores the same micrographs by predicting them itself."""
    from cryopick.config import HeatmapConfig
    from cryopick.distributed.predict import HeatmapPredictor, read_for_prediction
    from cryopick.errors import CryopickError
    from cryopick.selftrain.suggest import ROUND_POOL, round_suggestions, score_micrographs, suggestion_pool

    rdir = tmp_path / "round_001"
    torch.manual_seed(0)
    meta = PickerMeta(diameter=24.0, model=ModelConfig(base_width=4), threshold=0.5)
    save_picker(rdir, build_unet(ModelConfig(base_width=4)), meta)
    mics = mic_paths(sim_data, ["sim_0001", "sim_0002"])
    cfg = HeatmapConfig(tta=4)
    items = {"path": np.array([str(m) for m in mics]), "out": np.array([str(tmp_path / f"{m.stem}.npz") for m in mics])}
    read = read_for_prediction(items, {**vars(meta.preprocess)}, None)
    rows = HeatmapPredictor(str(rdir / "model.pt"), vars(cfg), keep_image=True, keep_spread=True)(read)
    heatmaps = {m: Path(str(npz)) for m, npz in zip(mics, rows["npz"])}
    plain = {"path": read["path"], "out": np.array([str(tmp_path / f"plain_{m.stem}.npz") for m in mics]),
             "image": read["image"], "scale": read["scale"]}
    HeatmapPredictor(str(rdir / "model.pt"), vars(cfg))(plain)  # without keep_spread: the same heatmap, no spread
    with np.load(plain["out"][0]) as z, np.load(heatmaps[mics[0]]) as zs:
        assert "spread" not in z and "spread" in zs and np.array_equal(z["heatmap"], zs["heatmap"])
    labeled = {mics[1]: [Box(0, 0, 128, 128)]}  # labeled in a region: its other three regions stay open
    path = round_suggestions(rdir, heatmaps, diameter=12.8, seed=1, labeled=labeled)  # 128-px regions
    got = {(r["micrograph"], r["region"]): r for r in csv.DictReader(open(path))}
    assert len(got) == 7 and ("sim_0002", "0,0,128,128") not in got  # 4 + 3 open regions of 256² micrographs
    # the same scores as predicting the micrographs again (up to the heatmaps' float16 storage)
    direct = score_micrographs(rdir / "model.pt", mics, cfg, None, 128, labeled={"sim_0002": labeled[mics[1]]})
    for s in direct:
        row = got[(s.micrograph, f"{s.box.x0},{s.box.y0},{s.box.x1},{s.box.y1}")]
        assert float(row["disagreement"]) == pytest.approx(s.disagreement, abs=2e-3)
        assert float(row["uncertainty"]) == pytest.approx(s.uncertainty, abs=0.05) and s.disagreement > 0
    # the pool: a seeded sample of at most ROUND_POOL, each micrograph once
    many = [Path(f"m{i}.mrc") for i in range(ROUND_POOL + 8)]
    pool = suggestion_pool(many, many[:3], seed=2)
    assert len(pool) == ROUND_POOL == len(set(pool)) and pool == suggestion_pool(many, many[:3], seed=2)
    with np.load(heatmaps[mics[0]]) as z:  # a heatmap without the spread of its views is named, not scored as 0
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in ("heatmap", "scale")})
    with pytest.raises(CryopickError, match="old.npz.*no spread"):
        round_suggestions(rdir, {mics[0]: tmp_path / "old.npz"}, diameter=12.8)
