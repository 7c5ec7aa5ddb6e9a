"""Label efficiency: what self-training gains at each labeling budget, against the ceiling and Topaz.

For one data set and seed (run per data set / seed / budget / arm; every result is cached under
``benchmarks/out/label_efficiency/``, its summary also under ``benchmarks/records/`` (tracked), and ``--merge``
turns the records into one table and a PNG):

* budgets: ``1`` (the first ``labeled`` micrograph, every particle picked), ``5`` (every ``labeled``
  micrograph; EMPIAR-10028 has 3), ``s10`` / ``s30`` (a seeded 10 % / 30 % of the picks of those);
* arm ``selftrain``: a campaign through ``run_campaign`` (the code behind ``cryopick selftrain``) with
  the defaults: round 0 on the budget's picks, then teacher–student rounds over every other non-test
  micrograph, unlabeled; ``selftrain.labels`` is left on auto, as a new user would; sparse budgets tell the
  campaign the particles a micrograph holds (``selftrain.expected_particles``, the number Topaz gets as ``-n``);
* arm ``offline``: the same round 0 (adopted, not retrained), then ``selftrain.method: offline``;
* arm ``variant``: the same round 0 (``--fresh-round0``: its own), then the rounds with the ``--set`` settings
  (``--tag`` names it);
* arm ``ceiling``: one round on every non-test micrograph with its expert picks, for the campaign's total steps;
* arm ``topaz``: Topaz 0.3.20 trained on the budget's picks (``benchmarks/topaz_runner.py``).

Every arm is scored on the ``test`` micrographs (``--score-on dev``, to choose settings: on the ``labeled``
micrographs outside the budget, with ``unlabeled`` as the pool; where the budget takes every ``labeled``
micrograph, on the first ``DEV_POOL`` ``unlabeled`` ones, which stay in the pool: scored as copies under
another name, transductively, as a user sees the picks of the micrographs a campaign learns from) at the threshold it stored, and at the best threshold (a diagnosis). The gap closed is
(self-trained − round 0) / (ceiling − round 0), in best-threshold F1.

    python benchmarks/label_efficiency.py --data empiar10017 --seed 0 --budget 1 --arm selftrain
    python benchmarks/label_efficiency.py --merge
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CRYOPICK_DATA_ROOT", REPO.parent / "shared" / "data"))
OUT = REPO / "benchmarks" / "out" / "label_efficiency"
sys.path.insert(0, str(REPO / "benchmarks"))
from _cache import finish, records, start  # noqa: E402

DIAMETERS = {"empiar10017": 27.0, "empiar10028": 56.0}  # px, as the data sets' READMEs
# particles per micrograph a user expects: Topaz's -n (as topaz_compare.py) and, for sparse budgets, cryopick's
# selftrain.expected_particles, so both pickers are told the same
EXPECTED_PARTICLES = {"empiar10017": 600, "empiar10028": 90}
BUDGETS = ("1", "5", "s10", "s30")
DEV_POOL = 5  # pool micrographs scored with --score-on dev when the budget takes every labeled micrograph
DEV_SUFFIX = "-dev"  # the name a pool micrograph is scored under (a campaign refuses one micrograph in two roles)
ARMS = ("selftrain", "offline", "variant", "ceiling", "topaz")
BATCH_HELP = ("patches per step and worker (4 patches of 7 diameters at the 20-px binning target hold about the pixels "
              "of 8 at 14 px, which the runs before 2026-12-06 used)")


def split_of(data: str) -> dict[str, list[str]]:
    return json.loads((DATA / data / "split.json").read_text())


def mics(data: str, names: list[str]) -> list[str]:
    return [str(DATA / data / "micrographs" / f"{n}.mrc") for n in names]


def budget_picks(data: str, budget: str, seed: int, out: Path) -> tuple[list[str], Path, int]:
    """(labeled micrograph stems, directory of their pick CSVs, labeled particles) of a budget."""
    labeled = split_of(data)["labeled"]
    names = labeled[:1] if budget == "1" else labeled
    coords = DATA / data / "coords"
    if not budget.startswith("s"):
        return names, coords, sum(_n_picks(coords / f"{n}.csv") for n in names)
    share = int(budget[1:]) / 100
    dest = out / f"coords_{budget}"
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1000 + seed)
    total = 0
    for n in names:
        rows = (coords / f"{n}.csv").read_text().splitlines()
        body = rows[1:]
        keep = sorted(rng.choice(len(body), size=max(1, round(share * len(body))), replace=False))
        (dest / f"{n}.csv").write_text("\n".join([rows[0], *[body[i] for i in keep]]) + "\n")
        total += len(keep)
    return names, dest, total


def _n_picks(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1)


def scored_names(args: argparse.Namespace, budget_names: list[str]) -> list[str]:
    """The micrographs an arm is scored on: ``test``, or for dev the ``labeled`` ones outside the budget, else
    the first :data:`DEV_POOL` ``unlabeled`` ones (see :func:`dev_copies`)."""
    split = split_of(args.data)
    if args.score_on == "test":
        return split["test"]
    return [n for n in split["labeled"] if n not in budget_names] or split["unlabeled"][:DEV_POOL]


def dev_copies(data: str, names: list[str], labeled: list[str], coords: Path, out: Path) -> tuple[list[str], Path]:
    """Pool micrographs to score transductively: (paths of their copies named ``<stem>-dev``, a picks folder).

    The folder holds the budget's picks of the ``labeled`` micrographs and each copy's complete expert picks;
    the campaign never trains on a copy (it is a test micrograph to it), and learns from the original unlabeled.
    """
    mdir, cdir = out / "dev_copies" / "micrographs", out / "dev_copies" / "coords"
    mdir.mkdir(parents=True, exist_ok=True)
    cdir.mkdir(parents=True, exist_ok=True)
    for n in labeled:
        shutil.copyfile(coords / f"{n}.csv", cdir / f"{n}.csv")
    paths = []
    for n in names:
        src, dst = DATA / data / "micrographs" / f"{n}.mrc", mdir / f"{n}{DEV_SUFFIX}.mrc"
        if not dst.exists():
            shutil.copyfile(src, dst)
        shutil.copyfile(DATA / data / "coords" / f"{n}.csv", cdir / f"{n}{DEV_SUFFIX}.csv")
        paths.append(str(dst))
    return paths, cdir


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The campaign settings of every arm: defaults, with the steps and width a 2-core machine affords."""
    return {"model.base_width": args.width, "train.steps": args.steps, "train.val_every": args.val_every,
            "train.batch_size": args.batch_size,
            "selftrain.rounds": args.rounds, "selftrain.patience": args.rounds, "train.seed": args.seed,
            "ray.num_workers": 2, "ray.cpu_per_worker": 0.5, "ray.use_gpu": "false", **dict(args.set)}


def campaign(args: argparse.Namespace, arm: str, out: Path) -> dict[str, Any]:
    """Run one campaign arm (resumes if interrupted) and return its per-round rows."""
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    split = split_of(args.data)
    names, coords, n_labeled = budget_picks(args.data, args.budget, args.seed, out.parent)
    scored = scored_names(args, names)
    transductive = bool(set(scored) & set(split["unlabeled"]))
    if transductive and arm == "ceiling":
        raise SystemExit("--arm ceiling --score-on dev: a ceiling on pool micrographs would train on their picks; use budget 1")
    pool = [n for n in split["labeled"] + split["unlabeled"] if n not in names and (transductive or n not in scored)]
    scored_mics = mics(args.data, scored)
    if transductive:
        scored_mics, coords = dev_copies(args.data, scored, names, coords, out.parent)
    elif coords != DATA / args.data / "coords":  # the scored micrographs' expert picks, complete
        for n in scored:
            shutil.copyfile(DATA / args.data / "coords" / f"{n}.csv", coords / f"{n}.csv")
    over = {**settings(args), "out": str(out), "name": f"{args.data}-{args.budget}-{arm}-s{args.seed}",
            "data.labeled": mics(args.data, names), "data.unlabeled": mics(args.data, pool), "data.test": scored_mics,
            "data.coords": str(coords), "data.diameter": DIAMETERS[args.data]}
    if args.budget.startswith("s") and arm != "ceiling":  # a user with sparse picks says how many particles there are
        over.setdefault("selftrain.expected_particles", EXPECTED_PARTICLES[args.data])
    if arm == "offline" or (arm == "variant" and not args.fresh_round0):
        over["selftrain.round0_model"] = str(out.parent / "selftrain" / "round_000")
    if arm == "offline":
        over["selftrain.method"] = "offline"
    if arm == "ceiling":
        every = [n for n in split["labeled"] + split["unlabeled"] if n not in scored]
        over.update({"data.labeled": mics(args.data, every), "data.unlabeled": [], "data.coords": str(DATA / args.data / "coords"),
                     "selftrain.rounds": 1, "train.steps": args.steps * args.rounds})
        n_labeled = sum(_n_picks(DATA / args.data / "coords" / f"{n}.csv") for n in every)
    cfg = load_config(None, over)
    t0 = time.monotonic()
    result = run_campaign(cfg, progress=False, verbose=False, log=lambda s: print(f"[{arm}] {s}", flush=True))
    rows = [round_row(out, int(m["round"]), m) for m in result.rounds]
    return {"arm": arm, "n_labeled": n_labeled, "rounds": rows, "minutes": (time.monotonic() - t0) / 60,
            "expected_particles": over.get("selftrain.expected_particles")}


def round_row(cdir: Path, rnd: int, m: dict[str, Any]) -> dict[str, Any]:
    """A round's figures: F1 at its stored threshold, best F1 over thresholds, time, what the teacher labeled."""
    rdir = cdir / f"round_{rnd:03d}"
    with open(rdir / "pr_curve.csv") as fh:
        pr = [(float(r["precision"]), float(r["recall"])) for r in csv.DictReader(fh)]
    best = max((2 * p * r / (p + r) for p, r in pr if p + r > 0), default=0.0)
    cal = json.loads((rdir / "calibration.json").read_text()) if (rdir / "calibration.json").is_file() else {}
    result = json.loads((rdir / "config.json").read_text()).get("result", {})
    return {"round": rnd, "f1": m["f1"], "best_f1": best, "threshold": m["threshold"], "seconds": m.get("time_total_s"),
            "train_seconds": m.get("time_train_s"), "picked_share": cal.get("picked_share"),
            "sparse": result.get("sparse_labels"), "teacher_positive": result.get("teacher_positive"),
            "teacher_negative": result.get("teacher_negative"), "kept_step": result.get("best_step")}


def topaz(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Topaz 0.3.20 trained on the budget's picks, scored like cryopick (its best threshold; it stores none)."""
    from topaz_compare import DATASETS, score
    from topaz_runner import ensure_topaz_venv, run_topaz, train_topaz

    names, coords, n_labeled = budget_picks(args.data, args.budget, args.seed, out.parent)
    exe = ensure_topaz_venv()
    model, train_s = train_topaz(exe, [Path(m) for m in mics(args.data, names)], coords, out / "train", n=EXPECTED_PARTICLES[args.data])
    scored = scored_names(args, names)
    ds = DATASETS[args.data]
    run_topaz(exe, [Path(m) for m in mics(args.data, scored)], out / "picks", model=str(model), radius=int(round(ds.radius)))
    s = score(ds, out / "picks")
    return {"arm": "topaz", "n_labeled": n_labeled, "train_seconds": train_s, "best_f1": s["best_f1"], "score": s}


def run_arm(args: argparse.Namespace) -> None:
    root = OUT / args.data / args.score_on / f"seed{args.seed}"
    arm = f"variant-{args.tag}" if args.arm == "variant" else args.arm
    dest = root / "ceiling" if args.arm == "ceiling" else root / args.budget / arm  # the ceiling serves every budget
    if not start(dest, args.again):
        return
    if args.arm == "topaz":
        R = topaz(args, dest)
    else:
        from cryopick.distributed.connect import connect, shutdown

        connect(num_cpus=2, quiet=True)
        try:
            R = campaign(args, args.arm, dest)
        finally:
            shutdown()
        R["arm"], R["settings"] = arm, dict(args.set)
    R.update(data=args.data, seed=args.seed, budget=args.budget, score_on=args.score_on, argv=sys.argv, finished=time.strftime("%F %T"),
             batch_size=args.batch_size)
    finish(dest, R)
    print(json.dumps(R, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DIAMETERS), default="empiar10017")
    p.add_argument("--seed", type=int, default=0, help="train.seed and the sparse subsample")
    p.add_argument("--budget", choices=BUDGETS, default="1")
    p.add_argument("--arm", choices=ARMS, default="selftrain")
    p.add_argument("--score-on", choices=("test", "dev"), default="test",
                   help="dev, to choose settings: score on the labeled micrographs outside the budget, or on pool micrographs")
    p.add_argument("--steps", type=int, default=300, help="training steps per round and worker")
    p.add_argument("--batch-size", type=int, default=4, help=BATCH_HELP)
    p.add_argument("--rounds", type=int, default=3, help="rounds including round 0")
    p.add_argument("--width", type=int, default=16, help="U-Net base width")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), type=str,
                   help="another campaign setting (YAML value), e.g. --set selftrain.ema 0.999")
    p.add_argument("--tag", default="x", help="name of a --arm variant")
    p.add_argument("--fresh-round0", action="store_true", help="a variant trains its own round 0 (its --set changes round 0)")
    p.add_argument("--again", action="store_true", help="rerun even if cached")
    p.add_argument("--merge", action="store_true", help="merge every cached result into docs/benchmarks.md and a PNG")
    args = p.parse_args()
    import yaml

    args.set = [(k, yaml.safe_load(v)) for k, v in args.set]
    if args.merge:
        from label_efficiency_report import merge

        merge(records(OUT))
        return
    run_arm(args)


if __name__ == "__main__":
    main()
