"""Do the active-learning rounds use their labels? One fresh training on an arm's labels against the arm's round.

An arm of ``benchmarks/active_learning.py`` adds regions and runs one short warm-started teacher–student round
after each step. This script rebuilds the regions an arm had labeled after ``--regions`` (from the cached arm:
its own ``suggestions.csv`` for ``combined``, the same seeded draw for ``random``), trains round 0 of a new
campaign from random weights on those region labels alone with as many steps as the arm had trained by then,
and scores both models the same way:

* dev: the split's ``unlabeled`` micrographs, outside every region labeled there (both models were taught the
  same regions), best F1 and F1 at each model's stored threshold: where a choice would be made;
* test: the same figures on the ``test`` micrographs, for the report only.

With ``--score-on dev`` the arm is one of ``active_learning.py --score-on dev``: its regions lie on the ``labeled``
micrographs, so the ``unlabeled`` ones are scored whole, and ``test`` is not read.

    python research/al_fresh_round.py --data empiar10028 --seed 0 --arm combined --regions 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cryopick.io.coords import Box

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def regions_after(arm: str, data: str, cdir: Path, seed: int, schedule: list[int], target: int,
                  score_on: str = "test") -> tuple[dict[str, list[Box]], int]:
    """The regions the cached arm ``cdir`` had labeled once it reached ``target`` regions, and the step index."""
    from active_learning import first_region, next_regions

    chosen = first_region(data, seed, score_on)
    step = 0
    for i, n in enumerate(schedule):
        if n > target:
            break
        if i > 0:
            have = sum(len(b) for b in chosen.values())
            for s, b in next_regions(arm, data, cdir, i - 1, chosen, n - have, seed, score_on):
                chosen.setdefault(s, []).append(b)
        step = i
    return chosen, step


def score(rdir: Path, data: str, names: list[str], chosen: dict[str, list[Box]], threshold: float, min_distance: float) -> tuple[float, float]:
    """(best F1, F1 at ``threshold``) of a round's heatmaps on ``names``, outside the labeled regions."""
    from label_efficiency import DATA, DIAMETERS

    from cryopick.evaluation.metrics import CANDIDATE_FLOOR, best_threshold, pooled_curve, score_at
    from cryopick.io.coords import read_coords
    from cryopick.selftrain.labels import inside_boxes
    from cryopick.selftrain.scoring import load_heatmap, picks_of

    per = []
    for stem in names:
        truth, _ = read_coords(DATA / data / "coords" / f"{stem}.csv")
        sh = load_heatmap(rdir / "heatmaps" / f"{stem}.npz", truth)
        xy, s = picks_of(sh, CANDIDATE_FLOOR, min_distance, 1.0)
        boxes = chosen.get(stem, [])
        keep = ~inside_boxes(xy, boxes) if boxes else np.ones(len(xy), bool)
        tkeep = ~inside_boxes(truth, boxes) if boxes else np.ones(len(truth), bool)
        per.append((xy[keep], s[keep], truth[tkeep]))
    curve = pooled_curve(per, radius=DIAMETERS[data] / 2)
    return best_threshold(curve)[0], score_at(curve, threshold)[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="empiar10028")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm", choices=("combined", "random"), default="combined")
    p.add_argument("--regions", type=int, default=8)
    p.add_argument("--score-on", choices=("test", "dev"), default="test",
                   help="dev: an arm of `active_learning.py --score-on dev` (regions on `labeled`, scored on `unlabeled`)")
    p.add_argument("--cache", type=Path, default=REPO / "benchmarks" / "out" / "active_learning")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "al_fresh_round")
    args = p.parse_args()
    from active_learning import arm_root, mics, pool_of, scored_of, settings, split_of, write_oracle_labels
    from label_efficiency import DATA, DIAMETERS

    cdir = arm_root(args.cache, args.data, args.seed, args.score_on) / args.arm
    summary = json.loads((cdir / "summary.json").read_text())
    schedule = [int(r["regions"]) for r in summary["steps"]]
    chosen, step = regions_after(args.arm, args.data, cdir, args.seed, schedule, args.regions, args.score_on)
    final = summary["regions_chosen"]
    if any(list(b) not in final.get(s, []) for s, bs in chosen.items() for b in bs):
        raise SystemExit(f"{cdir}: the rebuilt regions are not the arm's own")
    steps = int(summary["steps_per_round"]) * (step + 1)
    out = arm_root(args.out, args.data, args.seed, args.score_on) / f"{args.arm}_{args.regions}"
    m_path = out / "round_000" / "metrics.json"
    n_labeled = write_oracle_labels(args.data, out, chosen)
    if not m_path.is_file():
        from cryopick.distributed.connect import connect, shutdown
        from cryopick.distributed.orchestrator import run_campaign
        from cryopick.selftrain.config import load_config

        ns = argparse.Namespace(width=int(summary["width"]), steps=steps, val_every=50, batch_size=8, rounds=1,
                                seed=args.seed, set=[])
        over = {**settings(ns), "name": f"fresh-{args.data}-{args.arm}-s{args.seed}-{args.regions}", "data.labeled": [],
                "data.unlabeled": mics(args.data, pool_of(args.data, args.score_on)),
                "data.test": mics(args.data, scored_of(args.data, args.score_on)),
                "data.coords": str(DATA / args.data / "coords"), "data.diameter": DIAMETERS[args.data], "out": str(out)}
        connect(num_cpus=2, quiet=True)
        try:
            run_campaign(load_config(None, over), progress=False, verbose=False, log=lambda s: print(s, flush=True))
        finally:
            shutdown()
    split = split_of(args.data)
    rows = {}
    for name, rdir in (("arm", cdir / f"round_{step:03d}"), ("fresh", out / "round_000")):
        m = json.loads((rdir / "metrics.json").read_text())
        t, md = float(m["threshold"]), float(m["min_distance"])
        rows[name] = {"threshold": t, "dev": score(rdir, args.data, split["unlabeled"], chosen, t, md),
                      "test": score(rdir, args.data, split["test"], {}, t, md) if args.score_on == "test" else None}
    line = {"data": args.data, "seed": args.seed, "arm": args.arm, "regions": args.regions, "particles": n_labeled,
            "steps": steps, **rows}
    (out / f"result_{args.cache.name}.json").write_text(json.dumps(line, indent=1))  # one fresh model, compared with each cache
    print(json.dumps(line))


if __name__ == "__main__":
    main()
