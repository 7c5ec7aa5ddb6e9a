"""Topaz and cryopick on the `unlabeled` (dev) micrographs: where in the ranking does each lose to the other?

``benchmarks/topaz_compare.py`` scores both pickers on `test` only (the report). To choose cryopick's settings
against Topaz without reading `test`, this runs the Topaz models that comparison trained
(``RUN/DATA/topaz_train*/model_epoch*.sav``, the last epoch of each) on the dev micrographs, and scores them beside
the dev picks of ``benchmarks/picker_empiar.py`` roots (``ROOT/DATA/picks_dev``, picked at threshold 0.02): best F1,
average precision and precision at fixed recalls, all pick sets also with cryopick's edge band applied (picks
closer than ``--band`` px to an edge dropped; cryopick's own picks already respect it).

    python research/topaz_dev.py --data empiar10028 --cryopick benchmarks/out/pe_c benchmarks/out/pe_c_s1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from label_efficiency import DATA, DIAMETERS  # noqa: E402
from topaz_runner import ensure_topaz_venv, run_topaz  # noqa: E402

RECALLS = (0.1, 0.2, 0.5, 0.8, 0.9)


def pick_file(folder: Path, stem: str) -> Path:
    """A micrograph's picks in ``folder``: Topaz's ``STEM.csv`` (x, y, score) or cryopick's ``STEM.star``."""
    return next(f for f in (folder / f"{stem}.csv", folder / f"{stem}.star") if f.is_file())


def score(folder: Path, data: Path, stems: list[str], diameter: float, band: float) -> dict[str, float]:
    """Best F1, AP and precision at :data:`RECALLS` of the pooled picks (match radius half the diameter).

    ``folder`` holds one pick file per micrograph stem: Topaz's ``STEM.csv`` (x, y, score) or cryopick's ``STEM.star``.
    """
    from cryopick.evaluation.metrics import average_precision, best_threshold, pooled_curve
    from cryopick.inference.border import drop_near_edge
    from cryopick.io.coords import read_coords
    from cryopick.io.micrograph import read_shape

    per = []
    for stem in stems:
        xy, s = read_coords(pick_file(folder, stem))
        xy, s = drop_near_edge(xy, s, read_shape(data / "micrographs" / f"{stem}.mrc"), band)
        per.append((xy, s, read_coords(data / "coords" / f"{stem}.star")[0]))
    curve = pooled_curve(per, radius=diameter / 2)
    recall, precision = np.asarray(curve.recall), np.asarray(curve.precision)
    out = {"best": best_threshold(curve)[0], "ap": average_precision(curve)}
    for r in RECALLS:
        i = int(np.searchsorted(recall, r))
        out[f"p@{r:g}"] = float(precision[i]) if i < len(precision) else float("nan")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="empiar10028", choices=list(DIAMETERS))
    p.add_argument("--topaz-run", type=Path, default=Path(__file__).resolve().parents[1] / "benchmarks" / "out" / "topaz_compare" / "run")
    p.add_argument("--cryopick", nargs="*", type=Path, default=[], help="picker_empiar.py roots")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "benchmarks" / "out" / "topaz_dev")
    p.add_argument("--band", type=float, default=None, help="edge band, px (default: the first cryopick model's)")
    args = p.parse_args()
    data, diameter = DATA / args.data, DIAMETERS[args.data]
    stems = json.loads((data / "split.json").read_text())["unlabeled"]
    sets: list[tuple[str, Path]] = []
    trained = sorted(d for d in (args.topaz_run / args.data).glob("topaz_train*") if any(d.glob("model_epoch*.sav")))
    if trained:
        topaz = ensure_topaz_venv()
        for i, train in enumerate(trained):
            picks = args.out / args.data / f"topaz_{i}"
            if not all((picks / f"{s}.csv").exists() for s in stems):
                model = max(train.glob("model_epoch*.sav"), key=lambda m: int(m.stem.rsplit("epoch", 1)[1]))
                run_topaz(topaz, [data / "micrographs" / f"{s}.mrc" for s in stems], picks, model=str(model),
                          radius=int(round(diameter / 2)))
            sets.append((f"Topaz {train.name}", picks))
    sets += [(f"cryopick {root}", root / args.data / "picks_dev") for root in args.cryopick]
    band = args.band
    if band is None:
        band = json.loads((args.cryopick[0] / args.data / "run" / "config.json").read_text())["result"]["border"] if args.cryopick else 0.0
    cols = ["best", "ap", *[f"p@{r:g}" for r in RECALLS]]
    print(f"{args.data} dev ({len(stems)} micrographs); 'band': picks within {band:g} px of an edge dropped")
    print("| picks | " + " | ".join(cols) + " | band: best | band: ap |")
    print("|---" * (len(cols) + 3) + "|")
    for label, folder in sets:
        a, b = score(folder, data, stems, diameter, 0.0), score(folder, data, stems, diameter, band)
        print(f"| {label} | " + " | ".join(f"{a[c]:.3f}" for c in cols) + f" | {b['best']:.3f} | {b['ap']:.3f} |")


if __name__ == "__main__":
    main()
