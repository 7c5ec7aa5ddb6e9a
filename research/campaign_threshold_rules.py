"""Replay a campaign's stored-threshold rules on its saved round heatmaps, scored on DEV micrographs.

For complete-label campaigns (``benchmarks/label_efficiency.py`` caches), each round model's threshold is
recomputed by several rules from what the round saved (``tune.csv``, the heatmaps of its validation and count
micrographs), and F1 is scored on the count micrographs (the first ``unlabeled`` ones, which carry expert picks in
the shared data sets; dev, never ``test``):

* ``count``: the product's rule for complete picks, the k-th best peak on the count micrographs with
  k = (Tune's picks per expert particle) x (expert density) x area (``stages.choose_threshold``);
* ``tune``: Tune's threshold on the validation strips (the lowest within ``TUNE_TOLERANCE`` of the best F1);
* ``one``: the count rule with one pick per expected expert particle;
* ``centre``: ``cryopick train``'s rule, the log-odds middle of the strip's cut points within its noise;
* ``best``: the best threshold on the scored micrographs themselves (a diagnosis, not a rule).

Rounds that kept the previous round's weights repeat its model and are listed once. Findings:
``docs/selftrain.md``, "The picking threshold is count-matched on unlabeled micrographs".

    python research/campaign_threshold_rules.py benchmarks/out/label_efficiency/empiar10028/test/seed*/1/selftrain
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from cryopick.config import from_dict
from cryopick.evaluation.metrics import CANDIDATE_FLOOR, centre_within_noise
from cryopick.inference.picker import load_picker
from cryopick.io.coords import read_coords
from cryopick.selftrain import stages
from cryopick.selftrain.config import TUNE_TOLERANCE, ResolvedData, SelftrainConfig, resolve_campaign_geometry, resolve_data
from cryopick.selftrain.scoring import best_trial, candidate_scores, count_matched_threshold, load_heatmap, pooled, score_picks

RULES = ("count", "tune", "one", "centre", "best")


def campaign_config(campaign: Path) -> SelftrainConfig:
    """The campaign's resolved config (campaign.json, less the keys the campaign adds, such as its version)."""
    raw = json.loads((campaign / "campaign.json").read_text())
    sections = {f.name for f in dataclasses.fields(SelftrainConfig)}
    return resolve_campaign_geometry(from_dict(SelftrainConfig, {k: v for k, v in raw.items() if k in sections}, ""))


def replay(rdir: Path, cfg: SelftrainConfig, data: ResolvedData) -> dict[str, tuple[float, float]]:
    """{rule: (threshold, dev F1)} for one round directory of a campaign."""
    diam = cfg.data.diameter
    md = json.loads((rdir / "metrics.json").read_text())["min_distance"]
    band = load_picker(rdir)[1].border
    hm = lambda m: rdir / "heatmaps" / f"{m.stem}.npz"  # noqa: E731
    count = [load_heatmap(hm(m), read_coords(data.coords_file(m))[0], border=band)
             for m in data.unlabeled[:stages.COUNT_MICROGRAPHS]]
    val = [stages.scored_item(m, hm(m), data, band, True, cfg.train.val_fraction) for m in data.labeled]
    trials = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(rdir / "tune.csv"))]
    trials = [t for t in trials if t["min_distance"] == md]
    tune = best_trial(trials, TUNE_TOLERANCE)
    density, scores = stages.expert_density(data), candidate_scores(count, md, stages.SMOOTH_SIGMA)
    matched = lambda per_true: count_matched_threshold(count, per_true, density, md, stages.SMOOTH_SIGMA, scores)[0]  # noqa: E731
    per_true = tune["recall"] / tune["precision"] if tune["precision"] > 0 else 1.0
    f1 = lambda t: score_picks(count, t, md, diam, stages.SMOOTH_SIGMA)["f1"]  # noqa: E731
    rules = {"count": matched(per_true), "tune": tune["threshold"], "one": matched(1.0),
             "centre": centre_within_noise(pooled(val, CANDIDATE_FLOOR, md, stages.SMOOTH_SIGMA, diam))[1]}
    out = {k: (t, f1(t)) for k, t in rules.items()}
    out["best"] = max(((t, f1(t)) for t in np.round(np.arange(0.02, 0.96, 0.01), 2)), key=lambda p: p[1])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    args = p.parse_args(argv)
    rows: dict[str, list[dict[str, tuple[float, float]]]] = {}
    for campaign in args.campaigns:
        cfg = campaign_config(campaign)
        data, name = resolve_data(cfg), Path(cfg.data.coords).parent.name
        seen: set[tuple[str, ...]] = set()
        for tune_csv in sorted(campaign.glob("round_*/tune.csv")):
            rdir = tune_csv.parent
            if json.loads((rdir / "metrics.json").read_text()).get("scored_on") is None:
                continue
            r = replay(rdir, cfg, data)
            key = tuple(f"{r[k][0]:.4f}" for k in RULES)
            if key in seen:  # a round that kept the previous weights
                continue
            seen.add(key)
            rows.setdefault(name, []).append(r)
            print(f"{campaign} {rdir.name}: " + ", ".join(f"{k} {r[k][1]:.3f} (t {r[k][0]:.2f})" for k in RULES), flush=True)
    for name, rs in rows.items():
        print(f"{name}, {len(rs)} round models, dev F1 mean ± sd: " + ", ".join(
            f"{k} {np.mean([r[k][1] for r in rs]):.3f} ± {np.std([r[k][1] for r in rs], ddof=1) if len(rs) > 1 else 0:.3f}"
            for k in RULES))


if __name__ == "__main__":
    sys.exit(main())
