"""Sparse picks in campaigns: replay each round's stored threshold under the earlier and the current count rule.

For a finished campaign of ``benchmarks/label_efficiency.py`` on sparse picks (budget ``s10`` / ``s30``), this
reloads each round's saved heatmaps, rebuilds the validation strips against the sparse picks and Tune's grid of
trials on them, and sets the threshold on the count micrographs (the campaign's first unlabeled ones) as a round
does, by two rules:

* ``earlier``: the count from Tune's trials (Wilson-bounded matched share, z = 2) and the picks per expert particle
  of the best rescored trial (the rule before 2026-12-04, afternoon);
* ``current``: :func:`cryopick.selftrain.stages.sparse_share` (plain matched share over every cut point of the
  strips' curve at the chosen peak distance) and one pick per expected particle.

Each threshold is scored on the dev micrographs among the count micrographs (the split's ``unlabeled`` ones, with
their complete expert picks, which a campaign never reads) against the best threshold there. ``test`` is not read.

    python research/sparse_campaign_threshold.py benchmarks/out/label_efficiency/empiar10017/test/seed0/s10/selftrain \
        --data empiar10017
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from cryopick.evaluation.metrics import CANDIDATE_FLOOR, best_threshold, score_at
from cryopick.inference.picker import load_picker
from cryopick.io.coords import read_coords
from cryopick.selftrain.config import TUNE_TOLERANCE
from cryopick.selftrain.scoring import (
    ScoredHeatmap, best_trial, count_matched_threshold, estimated_particles, load_heatmap, picked_share, picks_per_true, pooled,
    score_picks, sparse_trials,
)
from cryopick.selftrain.stages import SMOOTH_SIGMA, sparse_share
from cryopick.training.dataset import held_strip

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DIAMETERS = {"empiar10017": 27.0, "empiar10028": 56.0}


def strips(rdir: Path, cj: dict, coords: Path, border: float = 0.0) -> list[ScoredHeatmap]:
    """The round's heatmaps of the labeled micrographs, scored on their validation strips against the sparse picks."""
    val = []
    for stem in (Path(m).stem for m in cj["resolved"]["labeled"]):
        sh = load_heatmap(rdir / "heatmaps" / f"{stem}.npz", read_coords(coords / f"{stem}.csv")[0], border=border)
        sh.rows, sh.cols = held_strip(sh.heatmap.shape, sh.scale, cj["train"]["val_fraction"], None)
        val.append(sh)
    return val


def replay(rdir: Path, cj: dict, coords: Path, data: str) -> str:
    diam = DIAMETERS[data]
    _, meta = load_picker(rdir, "cpu")
    split = json.loads((DATA / data / "split.json").read_text())

    def item(stem: str, picks: Path | None) -> ScoredHeatmap:
        xy = read_coords(picks)[0] if picks else None
        return load_heatmap(rdir / "heatmaps" / f"{stem}.npz", xy, border=meta.border)

    val = strips(rdir, cj, coords, meta.border)
    pool = [Path(m).stem for m in cj["resolved"]["unlabeled"] if (rdir / "heatmaps" / f"{Path(m).stem}.npz").is_file()]
    count = [item(s, None) for s in pool]
    dev = [item(s, DATA / data / "coords" / f"{s}.csv") for s in pool if s in split["unlabeled"]]
    density = sum(len(read_coords(coords / f"{Path(m).stem}.csv")[0]) for m in cj["resolved"]["labeled"]) / sum(
        sh.original_shape[0] * sh.original_shape[1] for sh in val)
    trials = [{**score_picks(val, t, f * diam, diam, SMOOTH_SIGMA), "threshold": t, "min_distance": f * diam}
              for t in cj["tune"]["thresholds"] for f in cj["tune"]["min_distance_fractions"]]
    if estimated_particles(trials) <= 0:
        return f"{rdir.name}: too few matches on the strips for a count"
    best = best_trial(sparse_trials(trials), TUNE_TOLERANCE)  # as a sparse round rescores Tune's trials
    md, earlier = best["min_distance"], picked_share(trials)
    rules = {"earlier": (earlier, picks_per_true(best)), "current": (sparse_share(val, md, diam, earlier), 1.0)}
    curve = pooled(dev, CANDIDATE_FLOOR, md, SMOOTH_SIGMA, diam)
    top, top_threshold = best_threshold(curve)
    line = [f"{rdir.name}: peak distance {md:.1f} px, {curve.n_true} dev particles, best dev F1 {top:.3f} "
            f"({score_at(curve, top_threshold)[3]} picks)"]
    for name, (share, per_true) in rules.items():
        thr, k = count_matched_threshold(count, per_true, density / share, md, SMOOTH_SIGMA)
        _, _, fs, n, _ = score_at(curve, thr)
        line.append(f"  {name}: share {share:.3f}, picks per particle {per_true:.2f}, threshold {thr:.3f}: "
                    f"dev F1 {fs:.3f} ({n} picks, {n / curve.n_true:.2f} per dev particle; best − this {top - fs:.3f})")
    return "\n".join(line)


def campaign_args(doc: str | None) -> tuple[argparse.Namespace, dict, Path]:
    """(arguments, campaign.json, folder of the campaign's sparse picks) of a script taking a campaign and ``--data``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaign", type=Path)
    p.add_argument("--data", choices=sorted(DIAMETERS), required=True)
    args = p.parse_args()
    cj = json.loads((args.campaign / "campaign.json").read_text())
    coords = Path(cj["data"]["coords"])
    if not coords.is_dir():  # run from another checkout: the benchmark writes the sparse picks beside the campaign
        coords = args.campaign.parent / coords.name
    return args, cj, coords


def main() -> None:
    args, cj, coords = campaign_args(__doc__)
    for rdir in sorted(args.campaign.glob("round_*")):
        if (rdir / "metrics.json").is_file():
            print(replay(rdir, cj, coords, args.data), flush=True)


if __name__ == "__main__":
    main()
