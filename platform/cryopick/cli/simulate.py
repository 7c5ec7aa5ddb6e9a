"""Write a synthetic data set: micrographs with particles at known centres.

Makes OUT/micrographs/*.mrc, OUT/coords/*.star (the true centres) and OUT/split.json
(labeled / unlabeled / test), so every command can be tried on a fresh machine with no data.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("-n", "--micrographs", type=int, default=8, help="number of micrographs (default 8)")
    parser.add_argument("--size", default="512",
                        help="micrograph size: edge N, WxH (5760x4092) or a detector: k2 (3838x3710), k3 (5760x4092), falcon4 (default 512)")
    parser.add_argument("--diameter", type=float, default=24.0, help="particle diameter, px (default 24)")
    parser.add_argument("--particles", type=int, default=120, help="particles per micrograph (default 120)")
    parser.add_argument("--snr", type=float, default=0.6, help="particle contrast over noise (default 0.6)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from cryopick.errors import CryopickError
    from cryopick.simulate import SimSpec, simulate_dataset

    from cryopick.simulate import parse_size

    try:
        width, height = parse_size(args.size)
    except ValueError as e:
        raise CryopickError(str(e)) from None
    if args.micrographs < 1 or args.diameter <= 0 or args.diameter >= min(width, height) / 2:
        raise CryopickError("need --micrographs >= 1 and 0 < --diameter < half the micrograph's shorter edge")
    spec = SimSpec(size=width, height=None if height == width else height, diameter=args.diameter, particles=args.particles, snr=args.snr, seed=args.seed)
    split = simulate_dataset(args.out, args.micrographs, spec)
    print(f"wrote {args.micrographs} micrographs to {args.out} "
          f"({len(split['labeled'])} labeled, {len(split['unlabeled'])} unlabeled, {len(split['test'])} test)")
    return 0
