"""Do a round model's BatchNorm statistics fit the campaign's other micrographs? Dev F1/AP before and after
re-estimating them on clean patches of those micrographs.

A round-0 model's BatchNorm running statistics come from the labeled micrographs alone (one, at the smallest
budget); a teacher round's from batches whose unlabeled patches are in the strong view (contrast, offset, blur,
noise, a zeroed cut-out), which the EMA teacher copies (``training/teacher.py:ema_update``). Either may be off for
the micrographs the model then picks. Re-estimating them on clean crops of the campaign's micrographs (AdaBN; SWA's
``update_bn``) tells by how much.

For each round directory: the model as saved and with its BatchNorm statistics re-estimated on ``--batches`` batches
of 8 random crops (flipped and turned; patch edge and binning as the campaign and model store them) of the
campaign's labeled and unlabeled micrographs (with ``--exclude-scored`` all but the scored ones, as a micrograph
outside the campaign is picked; with ``--on labeled`` its labeled ones alone, the control); both scored on DEV micrographs (the data set's ``unlabeled`` split, first
``--score`` of them; expert picks known; one test-time view unless ``--tta``): best F1 and average precision over
every peak above 0.02. ``--score-on strip`` scores the bottom ``val_fraction`` of the labeled micrographs
instead, about where the rounds' validation scores.

    python research/bn_recalibration.py --exclude-scored --data empiar10017 \
        benchmarks/out/label_efficiency/empiar10017/test/seed{0,1,2}/1/selftrain/round_000
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cryopick.config import PickConfig
from cryopick.evaluation.metrics import average_precision, best_threshold, pooled_curve
from cryopick.inference.picker import load_picker, pick_micrograph
from cryopick.io.coords import read_coords
from cryopick.io.micrograph import read_micrograph
from cryopick.preprocessing.binning import preprocess

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def dev_score(model: nn.Module, meta, mics: list[Path], coords: Path, tta: int = 1, strip: float = 0.0) -> tuple[float, float]:
    """(best F1, AP) of ``model`` on ``mics`` against their expert picks; with ``strip`` > 0 only in the bottom
    ``strip`` of each micrograph's rows (about the validation strip, for the labeled micrographs)."""
    cfg = PickConfig(tta=tta, threshold=0.02)
    rows = []
    for m in mics:
        mic = read_micrograph(m)
        picked = pick_micrograph(model, meta, mic, cfg)
        truth = read_coords(coords / f"{m.stem}.csv")[0]
        y0 = (1.0 - strip) * mic.shape[0] if strip > 0 else -1.0
        keep = picked.xy[:, 1] >= y0
        rows.append((picked.xy[keep], picked.scores[keep], truth[truth[:, 1] >= y0]))
    curve = pooled_curve(rows, meta.diameter / 2)
    return best_threshold(curve)[0], average_precision(curve)


@torch.no_grad()
def recalibrated(model: nn.Module, meta, mics: list[Path], patch: int, batches: int, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are the plain average over weak-view crops of ``mics``."""
    rng = np.random.default_rng(seed)
    images = [preprocess(read_micrograph(m).data, meta.preprocess, None).image for m in mics]
    out = copy.deepcopy(model)
    for mod in out.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average
    out.train()
    for _ in range(batches):
        crops = []
        for _ in range(8):
            img = images[int(rng.integers(len(images)))]
            y, x = int(rng.integers(img.shape[0] - patch)), int(rng.integers(img.shape[1] - patch))
            crop = img[y:y + patch, x:x + patch]
            crop = np.rot90(crop, int(rng.integers(4)))
            crops.append(np.ascontiguousarray(crop if rng.random() < 0.5 else crop[:, ::-1]))
        out(torch.from_numpy(np.stack(crops)[:, None].astype(np.float32)))
    out.eval()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rounds", nargs="+", type=Path)
    p.add_argument("--data", default="empiar10017")
    p.add_argument("--score", type=int, default=5, help="dev micrographs scored")
    p.add_argument("--batches", type=int, default=32)
    p.add_argument("--on", choices=("campaign", "labeled"), default="campaign",
                   help="re-estimate on the campaign's micrographs, or on its labeled ones alone (the control)")
    p.add_argument("--score-on", choices=("dev", "strip"), default="dev",
                   help="strip: the bottom val_fraction of the campaign's labeled micrographs (where validation scores)")
    p.add_argument("--tta", type=int, default=1, help="test-time-augmentation views scored (the product picks with 8)")
    p.add_argument("--exclude-scored", action="store_true",
                   help="re-estimate on the campaign's micrographs other than the scored ones (as a test micrograph is picked)")
    args = p.parse_args()
    torch.set_num_threads(1)
    root = DATA / args.data
    split = json.loads((root / "split.json").read_text())
    dev = [root / "micrographs" / f"{s}.mrc" for s in split["unlabeled"][: args.score]]
    for rdir in args.rounds:
        campaign = json.loads((rdir.parent / "campaign.json").read_text())
        seen = [Path(m) for m in campaign["resolved"]["labeled"] + (campaign["resolved"]["unlabeled"] if args.on == "campaign" else [])]
        if args.exclude_scored:
            seen = [m for m in seen if m.stem not in {d.stem for d in dev}]
        model, meta = load_picker(rdir)
        patch = int(campaign["train"]["patch_size"])
        scored, strip = dev, 0.0
        if args.score_on == "strip":
            scored, strip = [Path(m) for m in campaign["resolved"]["labeled"]], float(campaign["train"]["val_fraction"])
        before = dev_score(model, meta, scored, root / "coords", args.tta, strip)
        after = dev_score(recalibrated(model, meta, seen, patch, args.batches), meta, scored, root / "coords", args.tta, strip)
        print(f"{rdir}: best F1 {before[0]:.3f} -> {after[0]:.3f}, AP {before[1]:.3f} -> {after[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
