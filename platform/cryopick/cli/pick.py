"""Pick particles on micrographs with a trained model.

Writes one coordinate file per micrograph to OUT (named after the micrograph), in ORIGINAL
micrograph pixels whatever the model's internal binning, plus pick_config.json. The default
threshold and peak distance are those stored with the model (chosen on validation); a low
--threshold keeps weak picks with their scores, for `cryopick evaluate` to sweep.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryopick.config import PickConfig


def add_args(parser: argparse.ArgumentParser) -> None:
    from cryopick.io.coords import FORMATS  # the registry of coordinate formats

    parser.add_argument("--model", type=Path, required=True, help="run directory from `cryopick train` (or a model.pt)")
    parser.add_argument("--micrographs", nargs="+", required=True, help="MRC/TIFF files, globs, directories or a manifest")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--threshold", type=float, help="score threshold in [0, 1] (default: stored with the model)")
    parser.add_argument("--min-distance", type=float, help="minimum distance between picks, px (default: stored)")
    parser.add_argument("--format", default="star", choices=list(FORMATS), help="output format (default star)")
    parser.add_argument("--box-size", type=float, help="box size for .box output, px (default 1.5 x diameter)")
    parser.add_argument("--border", type=float,
                        help="drop picks closer than this to the edge, px (default: the edge band the training "
                             "picks left empty, stored with the model; 0 keeps every pick)")
    parser.add_argument("--save-heatmaps", action="store_true", help="also write OUT/heatmaps/NAME.mrc")
    parser.add_argument("--boxes", action="store_true", help="also write connected-component boxes OUT/NAME_boxes.csv")
    parser.add_argument("--pixel-size", type=float, help="Å/px, overriding the MRC header")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tile-size", type=int, default=512, help="inference tile, binned px (default 512)")
    parser.add_argument("--tile-batch", type=int, default=4, help="tiles per forward pass (bounds memory)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 autocast (default: where the hardware runs it natively; --no-amp: float32)")
    parser.add_argument("--tta", type=int, default=8, choices=[1, 2, 4, 8],
                        help="average the heatmap over this many flips/rotations (default 8; 1 = fastest)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def pick_config(args: argparse.Namespace) -> PickConfig:
    """The picking settings the flags give (unset ones: the model's stored values or the defaults)."""
    from cryopick.config import PickConfig, from_dict

    return from_dict(PickConfig, {
        "threshold": args.threshold, "min_distance": args.min_distance, "tile_size": args.tile_size,
        "tile_batch": args.tile_batch, "amp": args.amp, "border": args.border, "tta": args.tta,
    }, "pick")


def main(args: argparse.Namespace) -> int:
    from cryopick.io.manifest import resolve_micrographs
    from cryopick.inference.pick_files import pick_files

    cfg = pick_config(args)
    mics = resolve_micrographs(args.micrographs)
    records = pick_files(
        args.model, mics, args.out, cfg, args.format, args.box_size, args.save_heatmaps, args.boxes,
        args.device, args.pixel_size, not args.quiet,
    )
    total = sum(r.n_picks for r in records)
    secs = sum(r.seconds for r in records) / max(1, len(records))
    print(f"picked {total} particles on {len(records)} micrograph(s) ({secs:.2f} s each) -> {args.out}")
    return 0
