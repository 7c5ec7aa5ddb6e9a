"""Does the edge band learned from region labels pay? Cached active-learning rounds rescored with it.

A campaign labeled in regions only stored no edge band (``border`` 0) while the band was learned from micrographs
labeled whole only, so its picks fill the band the expert left empty. ``learn_border`` with boxes learns the band
from the regions that reach an edge. For every round of ``benchmarks/active_learning.py`` arms under the given
roots, this replays the regions the arm had labeled by that round (as the benchmark chose them), learns the band
from the expert picks inside them, and rescores the round's cached heatmaps of its scored micrographs (dev:
``unlabeled``; test: ``test``) with that band, at the round's stored threshold and peak distance and at the best
threshold. No training and no new prediction: the round's own model, threshold and distance, with and without
the band (a rerun would also use the band for the round's validation, Tune and checkpoint choice). Rounds whose
labels are too few to show a band get the particle radius (``FEW_LABELS_BAND``) and are summed up apart (band
printed negative).

    python research/region_band.py --data empiar10028 --score-on dev
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from active_learning import OUT, arm_root, expert, first_region, next_regions, scored_of  # noqa: E402
from label_efficiency import DATA, DIAMETERS  # noqa: E402

from cryopick.inference.border import FEW_LABELS_BAND  # noqa: E402


def replay(data: str, seed: int, arm: str, cdir: Path, targets: list[int], score_on: str) -> list[dict[str, list]]:
    """The regions labeled at each step (``{stem: [box]}`` per round), as ``active_learning.run_arm`` chose them."""
    chosen = first_region(data, seed, score_on)
    out = [{s: list(b) for s, b in chosen.items()}]
    for i, target in enumerate(targets[1:], start=1):
        if not (cdir / f"round_{i:03d}" / "metrics.json").is_file():
            break
        have = sum(len(b) for b in chosen.values())
        for s, b in next_regions(arm, data, cdir, i - 1, chosen, target - have, seed, score_on):
            chosen.setdefault(s, []).append(b)
        out.append({s: list(b) for s, b in chosen.items()})
    return out


def band_of(data: str, chosen: dict[str, list]) -> float:
    from cryopick.inference.border import learn_border
    from cryopick.io.micrograph import read_shape

    stems = sorted(chosen)
    labels = [(expert(data, s), read_shape(DATA / data / "micrographs" / f"{s}.mrc")) for s in stems]
    return learn_border(labels, DIAMETERS[data], [chosen[s] for s in stems])


def rescore(data: str, rdir: Path, stems: list[str], band: float) -> dict[str, float]:
    from cryopick.evaluation.metrics import CANDIDATE_FLOOR, best_threshold, pooled_curve, score_at
    from cryopick.selftrain.scoring import load_heatmap, picks_of, truth_in_rows

    m = json.loads((rdir / "metrics.json").read_text())
    per = []
    for s in stems:
        sh = load_heatmap(rdir / "heatmaps" / f"{s}.npz", expert(data, s), border=band)
        xy, sc = picks_of(sh, CANDIDATE_FLOOR, m["min_distance"], 1.0)
        per.append((xy, sc, truth_in_rows(sh)))
    curve = pooled_curve(per, radius=DIAMETERS[data] / 2)
    return {"f1": score_at(curve, m["threshold"])[2], "best_f1": best_threshold(curve)[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DIAMETERS), required=True)
    p.add_argument("--score-on", choices=("dev", "test"), default="dev")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=["combined", "errors", "random"])
    p.add_argument("--regions", default="1,2,4,8,16")
    args = p.parse_args()
    targets = [int(x) for x in args.regions.split(",")]
    stems = scored_of(args.data, args.score_on)
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            cdir = arm_root(OUT, args.data, seed, args.score_on) / arm
            if not cdir.is_dir():
                continue
            for i, chosen in enumerate(replay(args.data, seed, arm, cdir, targets, args.score_on)):
                if i == 0 and arm != args.arms[0]:
                    continue  # every arm adopts the same round 0
                rdir = cdir / f"round_{i:03d}"
                stored = json.loads((rdir / "metrics.json").read_text())
                before, band = rescore(args.data, rdir, stems, 0.0), band_of(args.data, chosen)
                after = rescore(args.data, rdir, stems, band)
                if np.isclose(band, FEW_LABELS_BAND * DIAMETERS[args.data]):
                    band = -band  # too few labels for a band: the radius, reported apart
                row = {"seed": seed, "arm": arm, "round": i, "regions": sum(len(b) for b in chosen.values()),
                       "band": round(band, 1), "f1_check": before["f1"], "best_check": before["best_f1"],
                       "f1_band": after["f1"], "best_band": after["best_f1"]}
                rows.append(row)
                print(f"seed {seed} {arm:8s} round {i} ({row['regions']:2d} regions) band {band:5.1f}: F1 stored "
                      f"{before['f1']:.3f} -> {after['f1']:.3f} (metrics {stored['f1']:.3f}), best {before['best_f1']:.3f} -> "
                      f"{after['best_f1']:.3f}", flush=True)
    for label, sub in (("a band", [r for r in rows if r["band"] > 0]), ("the radius", [r for r in rows if r["band"] < 0])):
        for key, name in (("f1", "stored"), ("best", "best")):
            d = np.array([r[f"{key}_band"] - r[f"{key}_check"] for r in sub])
            if len(d):
                print(f"{name} F1, band - none, over {len(d)} rounds with {label}: {d.mean():+.4f} ± "
                      f"{d.std(ddof=1) if len(d) > 1 else 0:.4f} (min {d.min():+.4f}, max {d.max():+.4f})")
        print(f"rounds with {label}: {len(sub)} of {len(rows)}")


if __name__ == "__main__":
    main()
