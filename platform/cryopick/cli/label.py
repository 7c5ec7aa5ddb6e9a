"""Bring labels into a self-training campaign.

`cryopick label import --campaign DIR FILES...` copies pick files (RELION .star, .box, .csv or
Topaz-style .txt, matched to the campaign's unlabeled micrographs by file stem) into DIR/labels/,
as labels of the whole micrograph or, with --region, of boxes of it (outside them nothing is taught). The next `cryopick selftrain --out DIR` moves those micrographs from the
unlabeled to the labeled set for the rounds it still runs (past rounds are kept as they are).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryopick.io.coords import Box


def add_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="copy pick files into the campaign's labels/ folder",
                         description="Copy pick files into the campaign's labels/ folder (whole-micrograph labels).")
    imp.add_argument("--campaign", type=Path, required=True, help="campaign directory (of `cryopick selftrain --out`)")
    imp.add_argument("files", nargs="+", type=Path, help="pick files named like the micrographs they label")
    imp.add_argument("--replace", action="store_true", help="overwrite labels the campaign already has")
    imp.add_argument("--region", action="append", metavar="X0,Y0,X1,Y1", type=_box,
                     help="the files label only this box (micrograph px) completely; outside it nothing is taught "
                          "(repeat for several boxes; default: the whole micrograph)")
    sub.add_parser("list", help="list the campaign's labels").add_argument("--campaign", type=Path, required=True)


def _box(text: str) -> Box:
    from cryopick.io.coords import Box

    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give x0,y0,x1,y1 in micrograph pixels") from None
    if x1 <= x0 or y1 <= y0:
        raise argparse.ArgumentTypeError(f"{text!r}: x1 > x0 and y1 > y0 needed")
    return Box(x0, y0, x1, y1)


def main(args: argparse.Namespace) -> int:
    import json

    from cryopick.errors import CryopickError
    from cryopick.selftrain.labels import import_labels, labels_dir, read_labels
    from cryopick.selftrain.state import CAMPAIGN_FILE

    path = args.campaign / CAMPAIGN_FILE
    if not path.is_file():
        raise CryopickError("not a campaign directory (no campaign.json)", args.campaign)
    if args.action == "list":
        labels = read_labels(args.campaign)
        for lab in labels.values():
            where = "whole" if lab.boxes is None else " ".join(",".join(f"{v:g}" for v in b) for b in lab.boxes)
            print(f"{lab.stem}\t{lab.n_picks} picks\t{where}\t{lab.source}")
        print(f"{len(labels)} labeled micrograph(s) in {labels_dir(args.campaign)}")
        return 0
    unlabeled = [Path(p) for p in json.loads(path.read_text())["resolved"]["unlabeled"]]
    done = import_labels(args.campaign, args.files, unlabeled, args.replace, args.region)
    print(f"imported labels of {len(done)} micrograph(s) ({sum(lab.n_picks for lab in done)} picks) into "
          f"{labels_dir(args.campaign)}; `cryopick selftrain --out {args.campaign}` trains with them from its next round")
    return 0
