"""Threshold / peak-distance search for a trained picker as a Ray job.

``ray job submit -- python pipelines/tune.py --model RUNDIR --micrographs 'val/*.mrc' --coords val_coords --out OUT``

Predicts the labeled validation micrographs with a Ray Data actor pool (the model loads once per
actor), then runs a Ray Tune grid over picking threshold x minimum peak distance maximising F1
against the expert picks (matching radius = half the diameter). Writes OUT/tune.csv (one row per
trial), OUT/best.json and, with --update-model, stores the winner in the model's model.pt so
``cryopick pick`` uses it. Inside a submitted job Ray is already running (RAY_ADDRESS is set):
resources are passed to ``ray.init`` only for a local run. Exit status: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pipelines/tune.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="run directory (model.pt) of a trained picker or round")
    p.add_argument("--micrographs", nargs="+", required=True, help="labeled validation micrographs (files, globs, manifests)")
    p.add_argument("--coords", type=Path, required=True, help="their expert pick files, matched by stem")
    p.add_argument("--out", type=Path, required=True, help="output directory (tune.csv, best.json, heatmaps/)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--min-distance-fractions", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.75, 1.0],
                   help="peak distances to try, as fractions of the particle diameter")
    p.add_argument("--actors", type=int, default=0, help="prediction actors (default 0: one per GPU, or per CPU core)")
    p.add_argument("--cpu-per-trial", type=float, default=0.5)
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="within this F1 of the best, take the lowest threshold (default 0: the best F1)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (ignored when RAY_ADDRESS is set)")
    p.add_argument("--update-model", action="store_true", help="store the best threshold and distance in model.pt")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cryopick.runtime import configure_cpu_env

    configure_cpu_env()  # before torch loads
    from cryopick.training.dataset import coords_for
    from cryopick.errors import CryopickError
    from cryopick.io.atomic import write_json
    from cryopick.io.coords import read_coords
    from cryopick.io.manifest import resolve_micrographs
    from cryopick.inference.picker import load_picker, save_picker
    from cryopick.selftrain.outputs import write_tune_csv

    try:  # every input checked before Ray starts
        model, meta = load_picker(args.model, "cpu")
        mics = [m.resolve() for m in resolve_micrographs(args.micrographs)]
        truth = {m.stem: read_coords(coords_for(m, args.coords))[0] for m in mics}
    except CryopickError as exc:
        print(f"pipelines/tune.py: error: {exc}", file=sys.stderr)
        return 2
    from cryopick.distributed.connect import ray_session
    from cryopick.distributed.tune import tune_model

    with ray_session(num_cpus=args.num_cpus):  # inside a submitted job: the cluster's resources
        best, trials = tune_model(args.model, mics, truth, args.out, args.thresholds, args.min_distance_fractions,
                                  actors=args.actors, cpu_per_trial=args.cpu_per_trial, tolerance=args.tolerance,
                                  progress=not args.quiet)
    model_file = args.model / "model.pt" if args.model.is_dir() else args.model
    write_tune_csv(args.out / "tune.csv", trials)
    write_json(args.out / "best.json", {**best, "model": str(model_file), "n_micrographs": len(mics)})
    if args.update_model:
        meta.threshold, meta.min_distance, meta.val_f1 = best["threshold"], best["min_distance"], best["f1"]
        save_picker(model_file, model, meta)
    print(json.dumps(best))
    print(f"best F1 {best['f1']:.4f} at threshold {best['threshold']:.2f}, min distance {best['min_distance']:.1f} px "
          f"({len(trials)} trials) -> {args.out / 'tune.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
