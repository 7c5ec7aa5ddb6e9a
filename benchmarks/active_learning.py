"""Active learning: F1 against labeled particles when the platform chooses the regions to label, against random regions.

An oracle plays the user: when a strategy asks for a region (a square of ``REGION_DIAMETERS`` particle
diameters, the campaign's default), the expert picks inside it are revealed and written as the
campaign's region label (``labels/<stem>.star`` + sidecar, exactly what the dashboard writes); outside
its regions a micrograph stays unlabeled. For one data set and seed (run per arm; cached under
``benchmarks/out/active_learning/``, summaries also under ``benchmarks/records/`` (tracked); ``--merge`` turns
the records into one table and a PNG):

* ``base``: round 0 of a campaign (``run_campaign``, the code behind ``cryopick selftrain``) labeled with
  one seeded random region of the non-test micrographs; every arm adopts it (``selftrain.round0_model``);
* arm ``combined`` (the default strategy): after each round, the next regions are the top rows of
  that round's ``suggestions.csv``, as the campaign wrote them;
* arm ``errors``: the same, with the campaign ranking by expected errors (``selftrain.suggest: errors``);
* arm ``random``: seeded random regions among those not yet labeled;
* arm ``ceiling``: every non-test micrograph labeled whole, one round with all the arms' training steps
  (``label_efficiency.py``'s ceiling).

The arms acquire regions until the labeled total reaches each of ``--regions`` (1, 2, 4, 8, 16), one
teacher–student round (the defaults) after each acquisition, and score every round on the ``test``
micrographs: F1 at the stored threshold and at the best one, against the labeled particles. The
labeling cost of an acquired region is the clicks a user makes to correct the round's picks there
(false picks + missed particles at the stored threshold); the first region is labeled from scratch
(one click per particle).

    python benchmarks/active_learning.py --data empiar10017 --seed 0 --arm combined
    python benchmarks/active_learning.py --merge

Choosing a setting of the rounds: ``--score-on dev`` draws the regions from the ``labeled`` micrographs only and
scores every round on the ``unlabeled`` ones (``benchmarks/out/active_learning/<data>/dev/``, never merged; no ceiling).
EMPIAR-10028's dev pool holds 12 regions (three 1024² micrographs in 560-px regions), so its dev steps end at
``--regions 1,2,4``; EMPIAR-10017's holds 80. A suggested arm adds at most the 10 regions a round suggests per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cryopick.io.coords import Box

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _cache import finish, records, start  # noqa: E402
from label_efficiency import BATCH_HELP, DATA, DIAMETERS, campaign as label_efficiency_campaign, mics, round_row, settings, split_of  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "active_learning"
SUGGESTED = ("combined", "errors")  # arms that label the top rows of the campaign's suggestions.csv (selftrain.suggest)
ARMS = ("base", *SUGGESTED, "random", "ceiling")


def pool_of(data: str, score_on: str = "test") -> list[str]:
    """The micrographs regions are drawn from: every non-test one, or for dev the ``labeled`` ones only."""
    split = split_of(data)
    return split["labeled"] + (split["unlabeled"] if score_on == "test" else [])


def scored_of(data: str, score_on: str = "test") -> list[str]:
    """The micrographs every round is scored on: ``test``, or for dev the ``unlabeled`` ones (no region falls there)."""
    return split_of(data)["test" if score_on == "test" else "unlabeled"]


def first_region(data: str, seed: int, score_on: str = "test") -> dict[str, list[Box]]:
    """The seeded region every arm of a data set and seed starts from, as ``{stem: [box]}``."""
    pool = pool_of(data, score_on)
    rng = np.random.default_rng(seed)
    stem = pool[int(rng.integers(len(pool)))]
    boxes = regions_of(data, stem)
    return {stem: [boxes[int(rng.integers(len(boxes)))]]}


def arm_root(cache: Path, data: str, seed: int, score_on: str = "test") -> Path:
    """Where a data set and seed's arms are cached (dev runs in their own folder, which ``--merge`` does not read)."""
    return cache / data / ("" if score_on == "test" else "dev") / f"seed{seed}"


def expert(data: str, stem: str) -> np.ndarray:
    from cryopick.io.coords import read_coords

    return read_coords(DATA / data / "coords" / f"{stem}.csv")[0]


def regions_of(data: str, stem: str) -> list[Box]:
    """The campaign's candidate regions of a micrograph (original px)."""
    from cryopick.io.micrograph import read_shape
    from cryopick.selftrain.acquisition import region_boxes
    from cryopick.selftrain.suggest import default_region_size

    size = default_region_size(DIAMETERS[data])
    return region_boxes(read_shape(DATA / data / "micrographs" / f"{stem}.mrc"), size)


def write_oracle_labels(data: str, cdir: Path, chosen: dict[str, list[Box]]) -> int:
    """The expert picks inside the chosen regions as the campaign's region labels; returns the labeled particles."""
    from cryopick.selftrain.labels import write_label

    total = 0
    for stem, boxes in chosen.items():
        mic = DATA / data / "micrographs" / f"{stem}.mrc"
        total += write_label(cdir, mic, expert(data, stem), "oracle", replace=True, boxes=boxes).n_picks
    return total


def clicks(data: str, model_dir: Path, stem: str, box: Box) -> int:
    """False picks + missed particles of the model's picks (stored threshold) inside ``box``."""
    from cryopick.config import PickConfig
    from cryopick.evaluation.metrics import match
    from cryopick.inference.picker import load_picker, pick_micrograph
    from cryopick.io.micrograph import read_micrograph
    from cryopick.selftrain.labels import inside_boxes

    model, meta = load_picker(model_dir)
    picked = pick_micrograph(model, meta, read_micrograph(DATA / data / "micrographs" / f"{stem}.mrc"), PickConfig())
    xy, scores = picked.xy[inside_boxes(picked.xy, [box])], picked.scores[inside_boxes(picked.xy, [box])]
    truth = expert(data, stem)
    truth = truth[inside_boxes(truth, [box])]
    hits = int(match(xy, scores, truth, DIAMETERS[data] / 2).sum())
    return (len(xy) - hits) + (len(truth) - hits)


def next_regions(arm: str, data: str, cdir: Path, rnd: int, chosen: dict[str, list[Box]], k: int, seed: int,
                 score_on: str = "test") -> list[tuple[str, Box]]:
    """The ``k`` regions an arm labels after round ``rnd``."""
    if arm in SUGGESTED:
        with open(cdir / f"round_{rnd:03d}" / "suggestions.csv") as fh:
            rows = [(r["micrograph"], Box(*(int(r[k]) for k in ("x0", "y0", "x1", "y1")))) for r in csv.DictReader(fh)]
        rows = [(s, b) for s, b in rows if b not in chosen.get(s, [])]
        if len(rows) < k:
            raise SystemExit(f"{cdir}: round {rnd} suggested {len(rows)} new regions, {k} wanted")
        return rows[:k]
    from cryopick.selftrain.acquisition import open_regions

    free = [(s, b) for s in pool_of(data, score_on) for b in regions_of(data, s)
            if open_regions([b], chosen.get(s, []))]
    order = np.random.default_rng(10_000 * seed + rnd).permutation(len(free))[:k]
    return [free[i] for i in order]


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) one arm and return its per-step rows."""
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    root = arm_root(args.cache, args.data, args.seed, args.score_on)
    cdir = root / args.arm
    pool = pool_of(args.data, args.score_on)
    chosen = first_region(args.data, args.seed, args.score_on)
    base = {**settings(args), "name": f"al-{args.data}-{args.arm}-s{args.seed}", "data.labeled": [],
            "data.unlabeled": mics(args.data, pool), "data.test": mics(args.data, scored_of(args.data, args.score_on)),
            "data.coords": str(DATA / args.data / "coords"), "data.diameter": DIAMETERS[args.data],
            "selftrain.patience": len(args.regions) + 1, "out": str(cdir)}
    if args.arm != "base":
        base["selftrain.round0_model"] = str(root / "base" / "round_000")
    if args.arm in SUGGESTED:
        base["selftrain.suggest"] = args.arm
    steps: list[dict[str, Any]] = []
    cost = first_clicks = write_oracle_labels(args.data, cdir, chosen)  # from scratch: one click per particle
    t0 = time.monotonic()
    for i, target in enumerate(args.regions[: 1 if args.arm == "base" else None]):
        if i > 0:
            have = sum(len(b) for b in chosen.values())
            new = next_regions(args.arm, args.data, cdir, i - 1, chosen, target - have, args.seed, args.score_on)
            cost += sum(clicks(args.data, cdir / f"round_{i - 1:03d}", s, b) for s, b in new)
            for s, b in new:
                chosen.setdefault(s, []).append(b)
        n_labeled = write_oracle_labels(args.data, cdir, chosen)
        cfg = load_config(None, {**base, "selftrain.rounds": i + 1})
        result = run_campaign(cfg, progress=False, verbose=False, log=lambda s: print(f"[{args.arm}] {s}", flush=True))
        m = next(r for r in result.rounds if int(r["round"]) == i)
        row = round_row(cdir, i, m)
        row.update(regions=target, n_labeled=n_labeled, clicks=cost, micrographs=len(chosen))
        print(f"[{args.arm}] {target} regions, {n_labeled} particles, {cost} clicks: F1 {row['f1']:.3f} (best {row['best_f1']:.3f})",
              flush=True)
        steps.append(row)
    return {"arm": args.arm, "steps": steps, "first_clicks": first_clicks, "regions_chosen": chosen,
            "minutes": (time.monotonic() - t0) / 60}


def run_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    ns = argparse.Namespace(**{**vars(args), "budget": "1", "score_on": "test", "rounds": len(args.regions)})
    return label_efficiency_campaign(ns, "ceiling", args.cache / args.data / f"seed{args.seed}" / "ceiling")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DIAMETERS), default="empiar10017")
    p.add_argument("--seed", type=int, default=0, help="train.seed, the first region and the random arm's regions")
    p.add_argument("--arm", choices=ARMS, default="combined")
    p.add_argument("--regions", default="1,2,4,8,16", help="labeled regions after each acquisition step")
    p.add_argument("--steps", type=int, default=200, help="training steps per round and worker")
    p.add_argument("--batch-size", type=int, default=4, help=BATCH_HELP)
    p.add_argument("--width", type=int, default=16, help="U-Net base width")
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), type=str)
    p.add_argument("--score-on", choices=("test", "dev"), default="test",
                   help="dev: regions from the `labeled` micrographs only, every round scored on `unlabeled` (to choose "
                        "settings on; cached apart, not merged)")
    p.add_argument("--again", action="store_true", help="rerun even if cached")
    p.add_argument("--cache", type=Path, default=OUT, help="where the arms' results are cached and merged from")
    p.add_argument("--merge", action="store_true", help="merge every cached result into docs/benchmarks.md and a PNG")
    args = p.parse_args()
    if args.merge:
        from active_learning_report import merge

        merge(records(args.cache))
        return
    import yaml

    args.set = [(k, yaml.safe_load(v)) for k, v in args.set]
    args.regions = [int(x) for x in args.regions.split(",")]
    args.rounds = len(args.regions)
    if args.score_on == "dev" and args.arm == "ceiling":
        raise SystemExit("--score-on dev has no ceiling arm (the ceiling is measured on test)")
    if args.arm != "ceiling":
        n_regions = sum(len(regions_of(args.data, s)) for s in pool_of(args.data, args.score_on))
        if args.regions[-1] > n_regions:
            raise SystemExit(f"--regions {args.regions[-1]}: the {args.score_on} pool of {args.data} holds {n_regions} regions")
        from cryopick.selftrain.suggest import ROUND_SUGGESTIONS

        step = max(b - a for a, b in zip(args.regions, args.regions[1:])) if len(args.regions) > 1 else 0
        if args.arm in SUGGESTED and step > ROUND_SUGGESTIONS:
            raise SystemExit(f"--regions {args.regions}: a step of {step} regions, a round suggests {ROUND_SUGGESTIONS}")
    dest = arm_root(args.cache, args.data, args.seed, args.score_on) / args.arm
    if args.arm not in ("base", "ceiling") and not (dest.parent / "base" / "summary.json").is_file():
        raise SystemExit(f"run --arm base for {args.data} seed {args.seed} first")
    if not start(dest, args.again):
        return
    from cryopick.distributed.connect import connect, shutdown

    connect(num_cpus=2, quiet=True)
    try:
        R = run_ceiling(args) if args.arm == "ceiling" else run_arm(args)
    finally:
        shutdown()
    R.update(data=args.data, seed=args.seed, score_on=args.score_on, settings=dict(args.set), argv=sys.argv, finished=time.strftime("%F %T"),
             steps_per_round=args.steps, width=args.width, batch_size=args.batch_size)
    finish(dest, R)
    print(json.dumps({k: v for k, v in R.items() if k != "steps"}, indent=1))


if __name__ == "__main__":
    main()
