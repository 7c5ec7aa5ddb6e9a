"""Which cut point of the validation strips' F1 curve transfers to unseen micrographs? Rules replayed on trained pickers.

For each ``benchmarks/picker_empiar.py`` root given (``ROOT/DATA/run`` a trained picker, ``ROOT/DATA/picks_dev`` its
picks of the `unlabeled` micrographs at threshold 0.02), rebuilds the validation strips as ``cryopick train`` did,
scores them at the stored peak distance, and applies each rule to that curve: the threshold a rule chooses is then
scored on the dev picks (every pick at or above it; the peak distance unchanged, so no new picking is needed).
Rules:

* ``lowest k``: the lowest cut point within k binomial standard errors of the strip's best F1 (the product's, k 0.5);
* ``best``: the strip's best cut point;
* ``centre k``: the cut point nearest the middle, in log-odds, of the thresholds within k standard errors
  (the interval's ends are the least supported choices when the strip's curve is flat);
* ``product``: what the ``cryopick train`` on ``PYTHONPATH`` chooses for these weights (``training.loop._choose_picking``).

Dev only; ``--test`` adds the `test` picks as a report column (never to choose by).

    python research/stored_threshold_rules.py benchmarks/out/pe_base_s0 benchmarks/out/pe_base_s1 ...
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from label_efficiency import DATA, DIAMETERS  # noqa: E402


def rules(curve) -> dict[str, float]:
    """The threshold each rule chooses on ``curve`` (the product's own rule functions, at each k)."""
    from cryopick.evaluation.metrics import best_threshold, centre_within_noise, lowest_within_noise

    out = {"best": best_threshold(curve)[1]}
    for k in (0.5, 1.0):
        out[f"lowest {k:g}"] = lowest_within_noise(curve, k)[1]
        out[f"centre {k:g}"] = centre_within_noise(curve, k)[1]
    return out


def strip_curve(run: Path):
    from cryopick.inference.picker import load_picker
    from cryopick.training.dataset import load_labeled, split_items
    from cryopick.training.loop import _choose_picking, evaluate

    config = json.loads((run / "config.json").read_text())
    model, meta = load_picker(run, "cpu")
    labeled = [load_labeled(Path(m), Path(config["coords"]), config["diameter"], meta.preprocess) for m in config["micrographs"]]
    _, val_items = split_items(labeled, [], config["diameter"], config["train"]["val_fraction"])
    val = evaluate(model, val_items, meta.diameter, meta.smooth_sigma, fractions=(meta.min_distance / meta.diameter,),
                   border=meta.border, labels=config["labels"])
    product = copy.deepcopy(meta)
    _choose_picking(model, val_items, product, config["labels"], say=False)
    assert product.min_distance == meta.min_distance, "the product chose another peak distance: rescoring the picks would not do"
    return val.curve, config["result"]["threshold"], product.threshold


def f1_at(picks: Path, data: str, t: float) -> float:
    from cryopick.evaluation.evaluate import evaluate_dirs

    return evaluate_dirs(picks, DATA / data / "coords", DIAMETERS[data], threshold=t).overall.f1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", type=Path, nargs="+")
    p.add_argument("--data", nargs="+", default=list(DIAMETERS))
    p.add_argument("--test", action="store_true", help="also score the test picks (report only)")
    a = p.parse_args()
    table: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    for data in a.data:
        for root in a.roots:
            run = root / data / "run"
            if not (run / "config.json").is_file():
                continue
            curve, stored, product = strip_curve(run)
            chosen = {**rules(curve), "product": product}
            from cryopick.evaluation.evaluate import evaluate_dirs

            best_dev = evaluate_dirs(root / data / "picks_dev", DATA / data / "coords", DIAMETERS[data]).overall.best_f1
            line = [f"{data} {root.name}: strip picks {curve.n_true}, stored {stored:.3f}, dev best {best_dev:.3f}"]
            for name, t in chosen.items():
                dev = f1_at(root / data / "picks_dev", data, t)
                test = f1_at(root / data / "picks_test", data, t) if a.test else None
                table.setdefault((data, name), []).append((dev, test))
                line.append(f"  {name:>10}: t {t:.3f} dev {dev:.3f}" + (f" test {test:.3f}" if test is not None else ""))
            print("\n".join(line), flush=True)
    print("\nmean ± sd over the roots (dev" + (", test" if a.test else "") + "):")
    for (data, name), rows in table.items():
        dev = [r[0] for r in rows]
        s = f"{data} {name:>10}: dev {statistics.mean(dev):.3f} ± {statistics.stdev(dev) if len(dev) > 1 else 0:.3f}"
        if a.test:
            test = [r[1] for r in rows]
            s += f"  test {statistics.mean(test):.3f} ± {statistics.stdev(test) if len(test) > 1 else 0:.3f}"
        print(s + f"  ({', '.join(f'{r[0]:.3f}' for r in rows)})")


if __name__ == "__main__":
    main()
