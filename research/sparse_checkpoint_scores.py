"""Sparse picks in campaigns: can the validation strips rank a round's models as the dev micrographs do?

For a finished campaign of ``benchmarks/label_efficiency.py`` on sparse picks (budget ``s10`` / ``s30``), this
reloads each round's saved heatmaps and scores the model behind them on the validation strips against the sparse
picks, as a checkpoint is scored (peak distance 0.6 diameters): plain best F1 and average precision, and best F1
with precision against an estimated particle count (each round's own estimate, and round 0's for all). Beside
them, the best F1 on the dev micrographs among the campaign's unlabeled ones (the split's ``unlabeled``, with their
complete expert picks, which a campaign never reads). ``test`` is not read.

    python research/sparse_checkpoint_scores.py benchmarks/out/label_efficiency/empiar10017/test/seed0/s10/selftrain \
        --data empiar10017
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cryopick.evaluation.metrics import CANDIDATE_FLOOR, PRCurve, average_precision, best_threshold, estimated_count
from cryopick.inference.picker import load_picker
from cryopick.io.coords import read_coords
from cryopick.selftrain.scoring import load_heatmap, pooled
from cryopick.selftrain.stages import SMOOTH_SIGMA
from sparse_campaign_threshold import DATA, DIAMETERS, campaign_args, strips  # the research/ folder is the script's path


def against(curve: PRCurve, count: float) -> float:
    """Best F1 with precision = recall × count / picks (at most 1)."""
    k = np.arange(1, len(curve.tp) + 1)
    p = np.minimum(1.0, curve.recall * count / k)
    f1 = np.where(p + curve.recall > 0, 2 * p * curve.recall / np.maximum(p + curve.recall, 1e-12), 0.0)
    return float(f1.max()) if len(f1) else 0.0


def main() -> None:
    args, cj, coords = campaign_args(__doc__)
    diam, split = DIAMETERS[args.data], json.loads((DATA / args.data / "split.json").read_text())
    first = 0.0
    for rdir in sorted(args.campaign.glob("round_*")):
        if not (rdir / "metrics.json").is_file():
            continue
        _, meta = load_picker(rdir, "cpu")
        val = strips(rdir, cj, coords)  # no edge band, as checkpoints are scored
        pool = [Path(m).stem for m in cj["resolved"]["unlabeled"] if Path(m).stem in split["unlabeled"]]
        dev = [load_heatmap(rdir / "heatmaps" / f"{s}.npz", read_coords(DATA / args.data / "coords" / f"{s}.csv")[0],
                            border=meta.border) for s in pool if (rdir / "heatmaps" / f"{s}.npz").is_file()]
        strip = pooled(val, CANDIDATE_FLOOR, 0.6 * diam, SMOOTH_SIGMA, diam)
        own = estimated_count(np.arange(1, len(strip.tp) + 1), strip.tp, strip.recall)
        first = first or own
        top = best_threshold(pooled(dev, CANDIDATE_FLOOR, 0.6 * diam, SMOOTH_SIGMA, diam))[0]
        print(f"{rdir.name}: strip ({strip.n_true} picks) plain F1 {best_threshold(strip)[0]:.3f}, AP {average_precision(strip):.3f}; "
              f"against its own count ({own:.0f}) {against(strip, own):.3f}, against round 0's ({first:.0f}) "
              f"{against(strip, first):.3f} | dev best F1 {top:.3f} ({len(dev)} micrographs)", flush=True)


if __name__ == "__main__":
    main()
