"""What a round's teacher would label on DEV micrographs, with the peak table as fitted or divided by its top.

The teacher's particles are peaks whose calibrated precision P(peak matches an expert pick | score) exceeds
``selftrain.positive`` (0.95). Where the expert leaves particles unpicked, the precision of even the most
confident peaks is capped by the share the expert picked (EMPIAR-10028's one-micrograph round-0 tables top
out at 0.71-0.82), so no peak qualifies, class balance then drops the background too, and the teacher is
silent. Read as positive-unlabeled data (Elkan & Noto, KDD 2008), the top plateau of the table estimates
the expert's picking frequency, and table / top is the precision against all particles. This script applies
both tables to the saved heatmaps of a campaign round's count micrographs (the first ``unlabeled`` ones:
dev, expert picks known) on the whole micrograph, and reports what each teacher would label:

* particles: peaks labeled particle, the share matched one-to-one to an expert pick within half a diameter (precision against
  the expert), and the share of expert picks covered (recall);
* background: the share of pixels labeled background, and the share of expert particle-disk pixels among
  them (background taught on picked particles: an error whatever the expert omitted).

    python research/teacher_completeness.py benchmarks/out/label_efficiency/empiar10028/test/seed*/1/selftrain
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from cryopick.evaluation.metrics import match
from cryopick.io.coords import read_coords
from cryopick.preprocessing.labels import circle_mask
from cryopick.selftrain import stages
from cryopick.selftrain.config import resolve_data
from cryopick.selftrain.pseudo import PseudoLabeler
from cryopick.selftrain.scoring import load_heatmap
from cryopick.training.dataset import label_radius

sys.path.insert(0, str(Path(__file__).resolve().parent))
from campaign_threshold_rules import campaign_config  # noqa: E402


def normalised(labeler: PseudoLabeler) -> PseudoLabeler:
    """The same labeler with its peak table divided by its top value (precision against every particle)."""
    top = max(labeler.peak_calibration) if labeler.peak_calibration else 0.0
    if top <= 0:
        return labeler
    return dataclasses.replace(labeler, peak_calibration=[v / top for v in labeler.peak_calibration])


def teacher_stats(labeler: PseudoLabeler, items: list, diameter: float) -> dict[str, float]:
    """Pooled counts of what ``labeler`` labels on ``items`` (ScoredHeatmaps with expert picks)."""
    n_part = n_hit = n_true = 0
    px = bg = bg_on_true = 0
    for sh in items:
        mask = labeler.mask(sh.heatmap, diameter, sh.mean_scale)
        true_b = sh.true_xy / np.array([sh.scale[1], sh.scale[0]])
        disks = circle_mask(mask.shape, true_b, label_radius(diameter, sh.mean_scale)) == 1
        px += mask.size
        bg += int((mask == 0).sum())
        bg_on_true += int(((mask == 0) & disks).sum())
        # particle disks: connected components of the mask's particles, one per labeled peak (disks do not touch)
        lab, n = ndimage.label(mask == 1)
        if n:
            centres = np.array(ndimage.center_of_mass(mask == 1, lab, range(1, n + 1)))[:, ::-1]  # (x, y) binned
            scores = sh.heatmap[centres[:, 1].astype(int), centres[:, 0].astype(int)]
            hits = match(centres, scores, true_b, diameter / 2 / sh.mean_scale)  # one-to-one, as picks are scored
            n_hit += int(hits.sum())
            n_part += n
        n_true += len(true_b)
    return {"particles": n_part, "precision": n_hit / n_part if n_part else float("nan"),
            "recall": n_hit / n_true if n_true else float("nan"), "background": bg / px,
            "background_on_picks": bg_on_true / max(bg, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaigns", nargs="+", type=Path)
    p.add_argument("--round", type=int, default=0, help="the round whose tables and heatmaps are read")
    args = p.parse_args(argv)
    for campaign in args.campaigns:
        cfg = campaign_config(campaign)
        data = resolve_data(cfg)
        rdir = campaign / f"round_{args.round:03d}"
        items = [load_heatmap(rdir / "heatmaps" / f"{m.stem}.npz", read_coords(data.coords_file(m))[0])
                 for m in data.unlabeled[:stages.COUNT_MICROGRAPHS]]
        base = stages.round_labeler(cfg, rdir)
        for name, lab in (("as fitted", base), ("divided by top", normalised(base))):
            s = teacher_stats(lab, items, cfg.data.diameter)
            print(f"{campaign} {rdir.name} {name:>14} (top {max(lab.peak_calibration or [0]):.2f}): "
                  f"{s['particles']} particles, precision {s['precision']:.2f}, recall {s['recall']:.2f}; "
                  f"background {s['background']:.1%} of pixels, {s['background_on_picks']:.2%} of it on expert disks",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
