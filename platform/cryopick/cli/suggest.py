"""Suggest what to label next in a self-training campaign.

The latest round's model predicts every unlabeled micrograph with all its test-time-augmentation
views; each micrograph, or each region of one (--region-size px squares, labeled completely inside,
ignored outside), is scored by the share of picks near the round's threshold, their entropy and the
views' disagreement (combined), or by the corrections a user is expected to make there (errors), and
chosen greedily so that the suggestions are not near-copies (diversity).
Writes round_NNN/suggestions.csv in the campaign and prints the ranking.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    from cryopick.selftrain.acquisition import DEFAULT_STRATEGY, STRATEGIES

    parser.add_argument("--campaign", type=Path, required=True, help="campaign directory (of `cryopick selftrain --out`)")
    parser.add_argument("-n", type=int, default=10, help="how many suggestions (default 10)")
    parser.add_argument("--strategy", choices=STRATEGIES,
                        help=f"default: the campaign's selftrain.suggest ({DEFAULT_STRATEGY} unless set). combined: uncertainty + "
                             "entropy + view disagreement; errors: expected false picks + missed particles (calibrated); "
                             "random: the baseline")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--region-size", type=int, metavar="PX", help="region edge in original px (default: 10 particle diameters)")
    g.add_argument("--whole", action="store_true", help="suggest whole micrographs instead of regions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random strategy")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args: argparse.Namespace) -> int:
    from cryopick.errors import CryopickError
    from cryopick.selftrain.suggest import suggest

    if args.n < 1 or (args.region_size is not None and args.region_size < 16):
        raise CryopickError("need -n >= 1 and --region-size >= 16")
    region = None if args.whole else (args.region_size if args.region_size is not None else -1)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = suggest(args.campaign, args.n, args.strategy, region, args.seed, progress)
    print(f"round {result.round}: {len(result.chosen)} of {result.n_candidates} candidates ({result.strategy}) -> {result.path}")
    print(f"{'rank':>4}  {'micrograph':<32} {'region':<22} {'score':>6} {'unsure':>6} {'entropy':>7} {'views':>6} {'picks':>5}")
    for i, (s, score) in enumerate(result.chosen, 1):
        b = s.box
        region_text = "whole" if b is None else f"{b.x0},{b.y0}-{b.x1},{b.y1}"
        print(f"{i:>4}  {s.micrograph:<32} {region_text:<22} {score:6.3f} {s.uncertainty:6.3f} {s.entropy:7.3f} "
              f"{s.disagreement:6.3f} {s.n_picks:>5}")
    return 0
