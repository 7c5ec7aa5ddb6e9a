"""Round 0 from sparse picks, as ``cryopick train`` runs it: dev F1 of one setting, per seed.

Trains on a budget's seeded subsample of the ``labeled`` micrographs' picks (the subsample of
``benchmarks/label_efficiency.py``), told the particles a micrograph holds (``--expected-particles``, as Topaz's
``-n``), picks the ``unlabeled`` micrographs (dev; never ``test``) and scores them against every expert pick.
Extra ``cryopick train`` flags go in ``--train-args``; product code variants run from a worktree. ``--replay``
keeps each seed's trained model and only chooses its stored threshold and peak distance again with the code on
``PYTHONPATH`` (the rule that picks them is then compared on the same weights).

    python research/sparse_round0.py --data empiar10028 --budget s10 --seeds 0 1 2 --out /tmp/r0 [--train-args '--steps 400']
    python research/sparse_round0.py --data empiar10028 --budget s10 --seeds 0 1 2 --out /tmp/r0 --replay
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from label_efficiency import DATA, DIAMETERS, EXPECTED_PARTICLES, budget_picks, mics, split_of  # noqa: E402


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def replay(trained: Path, out: Path) -> Path:
    """A copy of the run in ``trained`` whose threshold and peak distance the current code chose again."""
    import shutil

    from cryopick.inference.picker import load_picker, save_picker
    from cryopick.training.dataset import load_labeled, split_items
    from cryopick.training.loop import _choose_picking

    config = json.loads((trained / "config.json").read_text())
    model, meta = load_picker(trained, "cpu")
    labeled = [load_labeled(Path(m), Path(config["coords"]), config["diameter"], meta.preprocess) for m in config["micrographs"]]
    prior = config["result"]["unpicked_prior"] or 0.0
    _, val_items = split_items(labeled, [], config["diameter"], config["train"]["val_fraction"], positive_unlabeled=prior > 0)
    expected = config["expected_particles"] if prior > 0 else None
    _choose_picking(model, val_items, meta, config["labels"], say=False, expected=expected)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(trained, out)
    save_picker(out, model, meta)
    config["result"].update(threshold=meta.threshold, min_distance=meta.min_distance)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return out


def one(data: str, budget: str, seed: int, out: Path, train_args: list[str], again: bool = False) -> dict[str, float]:
    names, coords, n = budget_picks(data, budget, seed, out)
    run_dir, picks = out / "run", out / "picks_dev"
    t0 = time.monotonic()
    if again:
        run_dir, picks = replay(run_dir, out / "run_replay"), out / "picks_dev_replay"
    else:
        run(["cryopick", "train", "--micrographs", *mics(data, names), "--coords", str(coords), "--diameter",
             str(DIAMETERS[data]), "--expected-particles", str(EXPECTED_PARTICLES[data]), "--seed", str(seed), "--out", str(run_dir),
             "--quiet", *train_args])
    train_s = time.monotonic() - t0
    stored = json.loads((run_dir / "config.json").read_text())["result"]["threshold"]
    run(["cryopick", "pick", "--model", str(run_dir), "--micrographs", *mics(data, split_of(data)["unlabeled"]),
         "--out", str(picks), "--threshold", "0.02", "--quiet"])
    ev = ["cryopick", "evaluate", "--picks", str(picks), "--truth", str(DATA / data / "coords"), "--diameter",
          str(DIAMETERS[data]), "--json"]
    best = json.loads(run(ev))
    at_stored = json.loads(run([*ev, "--threshold", str(stored)]))
    return {"picks": n, "best": best["best_f1"], "stored": at_stored["f1"], "ap": best["average_precision"],
            "threshold": stored, "train_min": train_s / 60}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="empiar10028", choices=list(DIAMETERS))
    p.add_argument("--budget", default="s10")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-args", default="")
    p.add_argument("--replay", action="store_true", help="choose threshold and peak distance again on the trained models")
    a = p.parse_args()
    rows = []
    for s in a.seeds:
        r = one(a.data, a.budget, s, a.out / f"seed{s}", a.train_args.split(), a.replay)
        rows.append(r)
        print(f"{a.data} {a.budget} seed {s} {a.train_args!r}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    if len(rows) > 1:
        print("mean ± sd: " + ", ".join(f"{k} {statistics.mean(r[k] for r in rows):.3f} ± {statistics.stdev(r[k] for r in rows):.3f}"
                                      for k in ("best", "stored", "ap")))
    (a.out / ("rows_replay.json" if a.replay else "rows.json")).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
