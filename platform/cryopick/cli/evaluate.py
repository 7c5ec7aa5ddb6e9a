"""Score picks against expert picks: precision, recall, F1 and average precision.

Pick files and true-pick files are matched by file stem. Each pick matches at most one true
centre within --radius (default half the diameter), strongest picks first. Also sweeps the
picks' own scores for the best F1 and its threshold (pick with a low --threshold to use this).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time so that --help stays fast
    from cryopick.evaluation.evaluate import Evaluation


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--picks", type=Path, required=True, help="directory of pick files")
    parser.add_argument("--truth", type=Path, required=True, help="directory of expert pick files")
    parser.add_argument("--diameter", type=float, required=True, help="particle diameter, px")
    parser.add_argument("--radius", type=float, help="match radius, px (default diameter / 2)")
    parser.add_argument("--threshold", type=float, help="only count picks scoring at least this")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--per-micrograph", action="store_true", help="also list each micrograph")
    parser.add_argument("--plots", type=Path, help="write pr_curve.png (and overlays with --micrographs) here")
    parser.add_argument("--micrographs", type=Path, help="micrograph directory, for overlay plots")


def main(args: argparse.Namespace) -> int:
    from cryopick.evaluation.evaluate import evaluate_dirs

    ev = evaluate_dirs(args.picks, args.truth, args.diameter, args.radius, args.threshold)
    o = ev.overall
    if args.json:
        out: dict[str, object] = {k: o.as_dict()[k] for k in ("precision", "recall", "f1", "average_precision", "n_picks", "n_true", "best_f1", "best_threshold")}
        out.update(n_scored=len(ev.per_micrograph), picks_without_truth=ev.picks_without_truth,
                   truth_without_picks=ev.truth_without_picks)
        if args.per_micrograph:
            out["per_micrograph"] = {k: v.as_dict() for k, v in ev.per_micrograph.items()}
        print(json.dumps(out))
    else:
        if args.per_micrograph:
            print(f"{'micrograph':40s} {'picks':>6s} {'true':>6s} {'P':>6s} {'R':>6s} {'F1':>6s}")
            for stem, s in ev.per_micrograph.items():
                print(f"{stem[:40]:40s} {s.n_picks:6d} {s.n_true:6d} {s.precision:6.3f} {s.recall:6.3f} {s.f1:6.3f}")
        print(f"precision {o.precision:.3f}  recall {o.recall:.3f}  F1 {o.f1:.3f}  AP {o.average_precision:.3f}  "
              f"({o.n_picks} picks, {o.n_true} true, {len(ev.per_micrograph)} micrographs)")
        print(f"best F1 {o.best_f1:.3f} at score threshold {o.best_threshold:.4f}")
        for what, stems in (("pick files without a true-pick file", ev.picks_without_truth),
                            ("true-pick files without a pick file", ev.truth_without_picks)):
            if stems:
                shown = ", ".join(stems[:5]) + (f" and {len(stems) - 5} more" if len(stems) > 5 else "")
                print(f"left out: {len(stems)} {what} ({shown})")
    if args.plots:
        _plots(args, ev)
    return 0


def _plots(args: argparse.Namespace, ev: Evaluation) -> None:
    from cryopick.io.micrograph import read_micrograph
    from cryopick.io.manifest import MICROGRAPH_SUFFIXES
    from cryopick.evaluation.plots import plot_picks, plot_pr_curves

    plot_pr_curves(args.plots / "pr_curve.png", {"all micrographs": ev.curve})
    if args.micrographs is None:
        return
    for stem, (pred_xy, scores, true_xy) in ev.pairs.items():
        mic = next((args.micrographs / f"{stem}{s}" for s in MICROGRAPH_SUFFIXES if (args.micrographs / f"{stem}{s}").is_file()), None)
        if mic is None:
            continue
        keep = scores >= (args.threshold if args.threshold is not None else ev.overall.best_threshold)
        s = ev.per_micrograph[stem]
        plot_picks(args.plots / f"overlay_{stem}.png", read_micrograph(mic).data, pred_xy[keep], args.diameter,
                   true_xy, f"{stem}: P {s.precision:.2f} R {s.recall:.2f}")
