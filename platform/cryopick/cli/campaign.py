"""Pick a whole data set: resumable, fault tolerant, one coordinate file per micrograph.

Writes OUT/picks/NAME.star (or --format), a RELION OUT/coordinate_files.star index, all picks
merged in OUT/particles.star (RELION 5 / cryoSPARC import), OUT/failures.tsv (micrograph, reason),
OUT/summary.json and OUT/particles_per_micrograph.png. Rerunning the same command skips every
micrograph whose output is complete and redoes partial ones; bad micrographs (truncated, corrupt,
empty, NaN, constant, smaller than the particle) are listed in failures.tsv and the campaign goes
on. Exit code 0 when every micrograph was picked, 1 when some failed, 2 on a usage error.

Engine: local (this process) by default; Ray (--ray) when RAY_ADDRESS is set or --workers > 1,
with an actor pool that loads the model once per actor and uses GPUs where the cluster has them.
--config takes a YAML like pipelines/configs/pick_cpu.yaml; flags override it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

TOP_KEYS = ("model", "micrographs", "out", "engine", "campaign")
# flag -> (section, key) in the campaign config; None section = top level of BatchConfig
FLAGS = {
    "format": (None, "format"), "box_size": (None, "box_size"), "pixel_size": (None, "pixel_size"),
    "device": (None, "device"), "workers": (None, "workers"), "cpus_per_worker": (None, "cpus_per_worker"),
    "gpus_per_worker": (None, "gpus_per_worker"), "batch_size": (None, "batch_size"),
    "max_task_retries": (None, "max_task_retries"), "threshold": ("pick", "threshold"),
    "min_distance": ("pick", "min_distance"), "border": ("pick", "border"), "tile_size": ("pick", "tile_size"),
    "tile_batch": ("pick", "tile_batch"), "tta": ("pick", "tta"), "mask_sigma": ("mask", "max_sigma"), "mask_window": ("mask", "window"),
}


def add_args(parser: argparse.ArgumentParser) -> None:
    from cryopick.io.coords import FORMATS  # the registry of coordinate formats

    parser.add_argument("--model", type=Path, help="run directory from `cryopick train` (or a model.pt)")
    parser.add_argument("--micrographs", nargs="+",
                        help="MRC/TIFF files, globs, directories, .txt or RELION .star manifests")
    parser.add_argument("--out", type=Path, help="campaign output directory (reused to resume)")
    parser.add_argument("--config", type=Path, help="YAML with model/micrographs/out/engine and a campaign section")
    parser.add_argument("--format", choices=list(FORMATS), help="pick file format (default star)")
    parser.add_argument("--threshold", type=float, help="score threshold in [0, 1] (default: stored with the model)")
    parser.add_argument("--min-distance", type=float, help="minimum distance between picks, px (default: stored)")
    parser.add_argument("--border", type=float,
                        help="drop picks closer than this to the edge, px (default: stored with the model)")
    parser.add_argument("--tta", type=int, choices=[1, 2, 4, 8],
                        help="average each heatmap over this many flips/rotations (default 8; 1 = fastest)")
    parser.add_argument("--box-size", type=float, help="box size for .box output, px (default 1.5 x diameter)")
    parser.add_argument("--pixel-size", type=float, help="Å/px, overriding the MRC headers")
    g = parser.add_argument_group("carbon / thick-ice mask")
    g.add_argument("--mask", action=argparse.BooleanOptionalAction, default=None,
                   help="drop picks in regions whose local mean/std is far from the micrograph's median")
    g.add_argument("--mask-sigma", type=float, help="flag regions this many robust sigmas off the median (default 5)")
    g.add_argument("--mask-window", type=float, help="statistics window in particle diameters (default 3)")
    g = parser.add_argument_group("engine")
    e = g.add_mutually_exclusive_group()
    e.add_argument("--ray", dest="engine", action="store_const", const="ray",
                   help="run on Ray (the cluster in RAY_ADDRESS, else a new local Ray)")
    e.add_argument("--local", dest="engine", action="store_const", const="local", help="run in this process")
    g.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, else one per --cpus-per-worker CPUs)")
    g.add_argument("--cpus-per-worker", type=float, help="Ray CPUs per actor (default 1)")
    g.add_argument("--gpus-per-worker", type=float, help="Ray GPUs per actor (default 1 when the cluster has GPUs)")
    g.add_argument("--batch-size", type=int, help="micrographs per actor call (default 4)")
    g.add_argument("--max-task-retries", type=int, help="retries of a batch whose actor died (default 3)")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument("--tile-size", type=int, help="inference tile, binned px (default 512)")
    g.add_argument("--tile-batch", type=int, help="tiles per forward pass (halved automatically on out-of-memory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve(args: argparse.Namespace) -> tuple[Path, list[Path], Path, Any, str]:
    """YAML (if any) overlaid with flags -> (model, micrographs, out, BatchConfig, engine).

    Raises:
        CryopickError: unknown keys, bad values, missing inputs or files (before any work starts).
    """
    from cryopick.batch.config import batch_config
    from cryopick.config import load_yaml
    from cryopick.errors import CryopickError
    from cryopick.io.manifest import resolve_micrographs

    raw = load_yaml(args.config) if args.config else {}
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise CryopickError(f"unknown config key {unknown[0]!r} (known: {', '.join(TOP_KEYS)})", args.config)
    section: dict[str, Any] = dict(raw.get("campaign") or {})
    for part in ("pick", "mask"):
        section[part] = dict(section.get(part) or {})
    for flag, (sub, key) in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            (section[sub] if sub else section)[key] = value
    if args.mask is not None:
        section["mask"]["enabled"] = args.mask
    if args.workers is not None and args.workers < 1:
        raise CryopickError(f"--workers must be at least 1, got {args.workers} (leave it out for one actor per GPU, "
                            "or per --cpus-per-worker CPUs)")
    cfg = batch_config(section)
    given: dict[str, Any] = {}
    for name, key in (("--model", "model"), ("--micrographs", "micrographs"), ("--out", "out")):
        given[key] = getattr(args, key) or raw.get(key)
        if not given[key]:
            raise CryopickError(f"{name} is required (as a flag or in --config)")
    model, mics, out = Path(given["model"]), given["micrographs"], given["out"]
    if not model.exists():
        raise CryopickError("no such model (expected a run directory with model.pt)", model)
    # a listed file that is missing becomes a failures.tsv row, as one deleted after planning does
    micrographs = resolve_micrographs([mics] if isinstance(mics, str) else mics, must_exist=False)
    engine = args.engine or raw.get("engine") or "auto"
    if engine == "auto":
        engine = "ray" if os.environ.get("RAY_ADDRESS") or cfg.workers > 1 else "local"
    if engine not in ("local", "ray"):
        raise CryopickError(f"engine must be auto, local or ray, got {engine!r}")
    return model, micrographs, Path(out), cfg, engine


def main(args: argparse.Namespace) -> int:
    from cryopick.batch.run import run_batch

    model, micrographs, out, cfg, engine = resolve(args)
    if engine == "ray":
        from cryopick.distributed.batch import ray_rows

        summary = run_batch(model, micrographs, out, cfg, ray_rows, progress=not args.quiet)
    else:
        summary = run_batch(model, micrographs, out, cfg, "local", progress=not args.quiet)
    print("\n".join(summary.lines()))
    return 1 if summary.failed else 0
