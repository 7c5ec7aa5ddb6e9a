"""Does a region's acquisition score point at the model's errors? Replayed on cached active-learning rounds.

For each round of one ``benchmarks/active_learning.py`` arm (its saved heatmaps, model and calibration), every region
of the non-test micrographs (``REGION_DIAMETERS`` squares, labeled ones included) is scored by the product's
``combined`` score and by the expected errors at the round's threshold, Σ over candidate peaks of 1 − c(s) for picks
and c(s) for the rest (c: the round's calibrated peak precision). Each is set against the clicks a user would make
there (false picks + missed expert picks at the stored threshold) and the expert picks inside. Non-test micrographs
only (dev); no F1 is measured: what a label there would teach needs a training run.

    python research/acquisition_errors.py empiar10017 0 combined
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from active_learning import DIAMETERS, OUT, expert, pool_of  # noqa: E402


def _inside(xy: np.ndarray, b: Any) -> np.ndarray:
    return (xy[:, 0] >= b.x0) & (xy[:, 0] < b.x1) & (xy[:, 1] >= b.y0) & (xy[:, 1] < b.y1)


def region_rows(rd: Path, data: str) -> np.ndarray:
    """(R, 4): combined score, expected errors, clicks, expert picks of every region of the non-test micrographs."""
    from cryopick.evaluation.metrics import CANDIDATE_FLOOR, match
    from cryopick.inference.peaks import find_peaks
    from cryopick.inference.picker import load_picker
    from cryopick.selftrain.acquisition import base_score, expected_errors, region_boxes, score_maps
    from cryopick.selftrain.scoring import load_heatmap
    from cryopick.selftrain.suggest import default_region_size

    _, meta = load_picker(rd, "cpu")
    cal = json.loads((rd / "calibration.json").read_text()).get("peak")
    t, size, rows = meta.threshold, default_region_size(DIAMETERS[data]), []
    for stem in pool_of(data):
        npz = rd / "heatmaps" / f"{stem}.npz"
        sh = load_heatmap(npz)
        with np.load(npz) as z:
            spread = z["spread"].astype(np.float32)
        md = meta.resolved_min_distance() / sh.mean_scale
        truth = expert(data, stem)
        pxy, ps = find_peaks(sh.heatmap, md, CANDIDATE_FLOOR)
        pxy = pxy * np.array([sh.scale[1], sh.scale[0]])
        for b in region_boxes(sh.original_shape, size):
            k, txy = _inside(pxy, b), truth[_inside(truth, b)]
            s, pick = ps[k], ps[k] >= t
            hits = int(match(pxy[k][pick], s[pick], txy, DIAMETERS[data] / 2).sum()) if pick.any() else 0
            rows.append((base_score(score_maps(sh.heatmap, spread, sh.scale, stem, t, md, sh.image, b), "combined"),
                         expected_errors(s, t, cal), (pick.sum() - hits) + (len(txy) - hits), len(txy)))
    return np.array(rows, dtype=float)


def main() -> None:
    data, seed, arm = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    root = OUT / data / f"seed{seed}" / arm
    for rd in sorted(root.glob("round_00[0-9]")):
        a = region_rows(rd, data)
        for name, i in (("combined", 0), ("expected errors", 1)):
            top = np.argsort(-a[:, i])[:16]
            print(f"{data} seed {seed} {rd.name}: {name:15s} corr with clicks {np.corrcoef(a[:, i], a[:, 2])[0, 1]:+.2f}, "
                  f"with particles {np.corrcoef(a[:, i], a[:, 3])[0, 1]:+.2f}; top 16 hold {a[top, 2].mean():.1f} clicks "
                  f"(all {a[:, 2].mean():.1f}) and {a[top, 3].mean():.1f} particles (all {a[:, 3].mean():.1f})", flush=True)


if __name__ == "__main__":
    main()
