"""Does another peak score rank particles better than the heatmap's peak value? Replayed on trained pickers.

For each ``benchmarks/picker_empiar.py`` root given (``ROOT/DATA/run`` a trained picker), picks the `unlabeled` (dev)
micrographs as ``cryopick pick`` does (8 views, the stored peak distance, smoothing and edge band, candidates down to
the floor) and scores the same peaks five ways: the peak value (the product's), the mean over the views of the
logit, the heatmap averaged over a disk of a quarter diameter, the same for the logit, and the heatmap smoothed with
σ 2 binned px. Prints best F1 / AP of each (match radius half a diameter). Dev only.

    python research/peak_rescoring.py --data empiar10028 benchmarks/out/pe_c benchmarks/out/pe_c_s1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from label_efficiency import DATA, DIAMETERS  # noqa: E402


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def disk_mean(image: np.ndarray, radius: float) -> np.ndarray:
    """Mean of ``image`` over a disk of ``radius`` px around every pixel."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    return ndimage.convolve(image, disk / disk.sum(), mode="nearest")


def main() -> None:
    from cryopick.config import PickConfig
    from cryopick.evaluation.metrics import CANDIDATE_FLOOR, average_precision, best_threshold, pooled_curve
    from cryopick.inference.picker import heatmap_to_picks, load_picker
    from cryopick.io.coords import read_coords
    from cryopick.inference.tiling import predict_views
    from cryopick.io.micrograph import read_micrograph
    from cryopick.preprocessing.binning import preprocess

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", type=Path)
    p.add_argument("--data", default="empiar10028", choices=list(DIAMETERS))
    args = p.parse_args()
    data = DATA / args.data
    stems = json.loads((data / "split.json").read_text())["unlabeled"]
    for root in args.roots:
        model, meta = load_picker(root / args.data / "run")
        per: dict[str, list] = {k: [] for k in ("peak", "logit mean", "disk", "disk logit", "smoothed 2")}
        for stem in stems:
            mic = read_micrograph(data / "micrographs" / f"{stem}.mrc")
            binned = preprocess(mic.data, meta.preprocess, mic.pixel_size)
            views = predict_views(model, binned.image, PickConfig())
            heat, logits = views.mean(0), logit(views).mean(0)
            xy, peak = heatmap_to_picks(heat, binned, meta, CANDIDATE_FLOOR)  # as `cryopick pick` finds them
            truth = read_coords(data / "coords" / f"{stem}.star")[0]
            cols, rows = np.rint(binned.to_binned(xy)).astype(int).T
            r = meta.diameter / 4 / binned.mean_scale
            scores = {"peak": peak, "logit mean": logits[rows, cols], "disk": disk_mean(heat, r)[rows, cols],
                      "disk logit": disk_mean(logits, r)[rows, cols],
                      "smoothed 2": ndimage.gaussian_filter(heat, 2.0)[rows, cols]}
            for key, s in scores.items():
                per[key].append((xy, s, truth))
        cells = []
        for key, items in per.items():
            curve = pooled_curve(items, radius=meta.diameter / 2)
            cells.append(f"{key} {best_threshold(curve)[0]:.3f} / {average_precision(curve):.3f}")
        print(root, " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
