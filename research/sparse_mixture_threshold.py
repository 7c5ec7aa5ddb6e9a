"""Sparse picks in campaigns: the stored threshold of each round against the threshold where peak scores part.

For finished campaigns of ``benchmarks/label_efficiency.py`` (any budget), this reloads each round's saved heatmaps
of the count micrographs (the campaign's first unlabeled ones) and compares thresholds on the dev micrographs
among them (the split's ``unlabeled`` ones, with their complete expert picks, which a campaign never reads):

* ``stored``: the threshold the round stored (:func:`cryopick.selftrain.stages.choose_threshold` as the run's
  commit had it);
* ``mixture``: :func:`cryopick.selftrain.scoring.mixture_threshold` on the same count micrographs at the stored
  peak distance (``-`` where the model has no confident population; the count rule then stands);
* ``expected``: one pick per particle the user expects (``selftrain.expected_particles``, the number
  ``benchmarks/label_efficiency.py`` gives sparse budgets) on the same count micrographs.

Each is scored against the best threshold on the same dev micrographs. ``test`` is not read.

    python research/sparse_mixture_threshold.py benchmarks/out/label_efficiency/empiar10028/test/seed*/s10/selftrain
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryopick.evaluation.metrics import CANDIDATE_FLOOR, best_threshold, score_at
from cryopick.inference.picker import load_picker
from cryopick.io.coords import read_coords
from cryopick.selftrain.scoring import count_matched_threshold, load_heatmap, mixture_threshold, pooled
from cryopick.selftrain.stages import SMOOTH_SIGMA
from sparse_campaign_threshold import DATA, DIAMETERS  # the research/ folder is the script's path

EXPECTED = {"empiar10017": 600, "empiar10028": 90}  # as benchmarks/label_efficiency.py


def replay(rdir: Path, data: str) -> dict[str, float]:
    """Dev best F1, F1 at the stored threshold, at the mixture's (nan: none) and at the expected count's of one round."""
    cj = json.loads((rdir.parent / "campaign.json").read_text())
    stored = json.loads((rdir / "metrics.json").read_text())
    _, meta = load_picker(rdir, "cpu")
    dev_stems = set(json.loads((DATA / data / "split.json").read_text())["unlabeled"])
    pool = [Path(m).stem for m in cj["resolved"]["unlabeled"][:5] if (rdir / "heatmaps" / f"{Path(m).stem}.npz").is_file()]
    items = {s: load_heatmap(rdir / "heatmaps" / f"{s}.npz", read_coords(DATA / data / "coords" / f"{s}.csv")[0]
                             if s in dev_stems else None, border=meta.border) for s in pool}
    md = stored["min_distance"]
    curve = pooled([sh for s, sh in items.items() if s in dev_stems], CANDIDATE_FLOOR, md, SMOOTH_SIGMA, DIAMETERS[data])
    top, top_threshold = best_threshold(curve)
    mixture = mixture_threshold(list(items.values()), md, SMOOTH_SIGMA)
    shape = next(iter(items.values())).original_shape
    expected, _ = count_matched_threshold(list(items.values()), 1.0, EXPECTED[data] / (shape[0] * shape[1]), md, SMOOTH_SIGMA)
    return {"expected": score_at(curve, expected)[2], "expected_threshold": expected,"best": top, "best_threshold": top_threshold, "count": score_at(curve, stored["threshold"])[2],
            "count_threshold": stored["threshold"], "mixture": score_at(curve, mixture[0])[2] if mixture else float("nan"),
            "mixture_threshold": mixture[0] if mixture else float("nan"), "mode": mixture[1] if mixture else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaigns", type=Path, nargs="+")
    args = p.parse_args()
    gaps: dict[str, list[tuple[float, float]]] = {}
    print("campaign | round | dev best F1 (threshold) | stored | mixture rule (mode) | expected count | best − stored | best − chosen")
    for camp in args.campaigns:
        data = next(d for d in DIAMETERS if d in str(camp.resolve()))
        for rdir in sorted(camp.glob("round_*")):
            if not (rdir / "metrics.json").is_file() or not (rdir / "heatmaps").is_dir():
                continue
            o = replay(rdir, data)
            chosen = o["count"] if np.isnan(o["mixture"]) else o["mixture"]
            gaps.setdefault(f"{data} round {'0' if rdir.name.endswith('000') else '≥1'}", []).append(
                (o["best"] - o["count"], o["best"] - chosen))
            print(f"{camp} | {rdir.name[-1]} | {o['best']:.3f} ({o['best_threshold']:.3f}) | {o['count']:.3f} "
                  f"({o['count_threshold']:.3f}) | {o['mixture']:.3f} ({o['mixture_threshold']:.3f}; {o['mode']:.2f}) | "
                  f"{o['expected']:.3f} ({o['expected_threshold']:.3f}) | "
                  f"{o['best'] - o['count']:.3f} | {o['best'] - chosen:.3f}", flush=True)
    for key, v in sorted(gaps.items()):
        a = np.array(v)
        print(f"{key}: {len(a)} rounds, best − stored {a[:, 0].mean():.3f} ± {a[:, 0].std(ddof=1) if len(a) > 1 else 0:.3f}, "
              f"best − chosen {a[:, 1].mean():.3f} ± {a[:, 1].std(ddof=1) if len(a) > 1 else 0:.3f}")


if __name__ == "__main__":
    main()
