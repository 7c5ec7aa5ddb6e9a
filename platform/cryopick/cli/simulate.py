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
    parser.add_argument("--size", type=int, default=512, help="micrograph edge, px (default 512)")
    parser.add_argument("--diameter", type=float, default=24.0, help="particle diameter, px (default 24)")
    parser.add_argument("--particles", type=int, default=120, help="particles per micrograph (default 120)")
    parser.add_argument("--snr", type=float, default=0.6, help="particle contrast over noise (default 0.6)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from cryopick.errors import CryopickError
    from cryopick.simulate import SimSpec, simulate_dataset

    if args.micrographs < 1 or args.size < 64 or args.diameter <= 0 or args.diameter >= args.size / 2:
        raise CryopickError("need --micrographs >= 1, --size >= 64 and 0 < --diameter < size/2")
    spec = SimSpec(size=args.size, diameter=args.diameter, particles=args.particles, snr=args.snr, seed=args.seed)
    split = simulate_dataset(args.out, args.micrographs, spec)
    print(f"wrote {args.micrographs} micrographs to {args.out} "
          f"({len(split['labeled'])} labeled, {len(split['unlabeled'])} unlabeled, {len(split['test'])} test)")
    return 0
