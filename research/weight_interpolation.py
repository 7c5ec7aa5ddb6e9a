"""Does a round's model gain from being averaged with the model it started from? Dev F1/AP of the weight
interpolation (1 − a) · start + a · round (WiSE-FT, Wortsman et al. 2022) for a few a.

A teacher round warm-starts from round r-1's model and keeps its EMA teacher; both share an initialisation, so
their weights (BatchNorm statistics included) can be averaged. Scored as ``bn_recalibration.py`` scores: the
campaign's `test` micrographs (the dev campaigns of ``label_efficiency.py --score-on dev`` put dev micrographs
there), best F1 and average precision over every peak above 0.02.

    python research/weight_interpolation.py --alphas 0 0.5 1 \
        benchmarks/out/label_efficiency/empiar10017/dev/seed{0,1,2}/1/selftrain/round_001
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from bn_recalibration import dev_score
from cryopick.inference.picker import load_picker


def interpolate(start: torch.nn.Module, end: torch.nn.Module, a: float) -> torch.nn.Module:
    """(1 − a) · start + a · end, parameter by parameter and buffer by buffer (integer buffers from ``end``)."""
    out = copy.deepcopy(end)
    s, e = start.state_dict(), end.state_dict()
    out.load_state_dict({k: torch.lerp(s[k], v, a) if v.is_floating_point() else v for k, v in e.items()})
    return out.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rounds", nargs="+", type=Path, help="round_NNN directories (r ≥ 1)")
    p.add_argument("--alphas", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    p.add_argument("--start", type=int, default=None, help="the round to average with (default r-1)")
    p.add_argument("--tta", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(2)
    for rdir in args.rounds:
        campaign = json.loads((rdir.parent / "campaign.json").read_text())
        scored = [Path(m) for m in campaign["resolved"]["test"]]
        coords = Path(campaign["data"]["coords"])
        r = int(rdir.name.split("_")[1])
        start_dir = rdir.parent / f"round_{(r - 1 if args.start is None else args.start):03d}"
        start, _ = load_picker(start_dir)
        end, meta = load_picker(rdir)
        cells = []
        for a in args.alphas:
            f1, ap = dev_score(interpolate(start, end, a), meta, scored, coords, args.tta)
            cells.append(f"a={a:g}: F1 {f1:.3f} AP {ap:.3f}")
        print(f"{rdir} (from {start_dir.name}): " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
