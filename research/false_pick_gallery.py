"""What limits best F1 on a data set's dev micrographs: the false picks, or the missed particles? With a gallery.

Takes a folder of dev picks (a ``benchmarks/picker_empiar.py`` root's ``DATA/picks_dev``, picked at a low threshold,
or Topaz's ``STEM.csv`` files of ``research/topaz_dev.py``), finds the
pooled best-F1 threshold on the `unlabeled` (dev) micrographs, prints the true / false picks and missed particles
there, and draws the highest-scored false picks beside randomly chosen true picks (low-pass filtered crops of
1.7 diameters). If the false picks look like the true ones, the expert left particles unpicked and best F1 is
bounded by the labels, not by the picker. Dev only: `test` is never read.

    python research/false_pick_gallery.py --data empiar10028 --picks benchmarks/out/t20b8_s0/empiar10028/picks_dev --png docs/img/empiar10028_false_picks.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from label_efficiency import DATA, DIAMETERS, split_of  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from topaz_dev import pick_file  # noqa: E402

SHOWN = 16  # crops per row group


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="empiar10028", choices=list(DIAMETERS))
    p.add_argument("--picks", type=Path, required=True, help="folder of STEM.star or STEM.csv picks (x, y, score)")
    p.add_argument("--png", type=Path, default=None)
    args = p.parse_args()

    from scipy.ndimage import gaussian_filter

    from cryopick.evaluation.metrics import best_threshold, match, pooled_curve
    from cryopick.io.coords import read_coords
    from cryopick.io.micrograph import read_micrograph

    data, diameter = DATA / args.data, DIAMETERS[args.data]
    stems = split_of(args.data)["unlabeled"]
    per = []
    for stem in stems:
        xy, s = read_coords(pick_file(args.picks, stem))
        per.append((stem, xy, s, read_coords(data / "coords" / f"{stem}.star")[0]))
    curve = pooled_curve([(xy, s, t) for _, xy, s, t in per], radius=diameter / 2)
    f1, threshold = best_threshold(curve)
    crops: dict[bool, list[tuple[float, np.ndarray]]] = {True: [], False: []}
    n_true = n_false = n_missed = 0
    half = int(round(0.85 * diameter))
    for stem, xy, s, truth in per:
        keep = s >= threshold
        hit = match(xy[keep], s[keep], truth, diameter / 2)
        n_true, n_false, n_missed = n_true + int(hit.sum()), n_false + int((~hit).sum()), n_missed + len(truth) - int(hit.sum())
        image = gaussian_filter(read_micrograph(data / "micrographs" / f"{stem}.mrc").data.astype(np.float32), diameter / 40)
        for (x, y), score, h in zip(xy[keep], s[keep], hit):
            r, c = int(round(y)), int(round(x))
            if half <= r < image.shape[0] - half and half <= c < image.shape[1] - half:
                crops[bool(h)].append((float(score), image[r - half : r + half, c - half : c + half]))
    print(f"{args.data} dev, {args.picks}: best F1 {f1:.3f} at threshold {threshold:.3f}; true picks {n_true}, "
          f"false picks {n_false}, missed particles {n_missed}; precision {n_true / (n_true + n_false):.3f}, "
          f"recall {n_true / (n_true + n_missed):.3f}")
    if args.png is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    false = sorted(crops[False], key=lambda c: -c[0])[:SHOWN]
    rng = np.random.default_rng(0)
    true = [crops[True][i] for i in sorted(rng.choice(len(crops[True]), size=min(SHOWN, len(crops[True])), replace=False))]
    fig, axes = plt.subplots(4, SHOWN // 2, figsize=(SHOWN, 8.6))
    for ax, (score, crop) in zip(axes.flat, false + true):
        ax.imshow(crop, cmap="gray")
        ax.set_title(f"{score:.2f}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"{args.data} dev at the best-F1 threshold {threshold:.2f}: top two rows, the {len(false)} highest-scored "
                 f"of {n_false} false picks; bottom two rows, {len(true)} random true picks of {n_true} (score above each)")
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=60)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
