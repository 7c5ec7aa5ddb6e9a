"""Effect of the carbon / thick-ice mask on EMPIAR-10017 picks (precision, recall, picks removed).

Runs two real campaigns (``cryopick.batch.run.run_batch``, local engine) over the held-out
micrographs, without and with the default mask, and scores both against the expert picks; then
sweeps the mask's threshold and dilation on the same unmasked picks (the mask only removes picks,
so applying it afterwards gives exactly what a campaign with that setting would keep). Settings
are compared on ``unlabeled`` and reported separately on ``test``. The model comes from

    cryopick train --micrographs <the 5 labeled micrographs> --coords DATA/coords --diameter 27 \\
        --out benchmarks/out/campaign_model --steps 800 --threads 1

Usage: python benchmarks/campaign_mask.py [--model DIR] [--data DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
BAND = 30  # px: the filter-stripe band along the borders of these micrographs (see the data README)
SWEEP = [(3.0, 0.5), (4.0, 0.0), (4.0, 0.5), (5.0, 0.0), (5.0, 0.5), (6.0, 0.0)]  # (max_sigma, dilate)


def score(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], radius: float) -> dict[str, float]:
    """Pooled precision / recall / F1 of (pred_xy, scores, true_xy) triples, every pick kept."""
    from cryopick.evaluation.metrics import pooled_curve, summarize

    s = summarize(pooled_curve(pairs, radius))
    return {"precision": s.precision, "recall": s.recall, "f1": s.f1, "picks": s.n_picks, "matched": s.n_matched}


def main() -> int:
    from _report import update_section

    from cryopick.batch.config import BatchConfig
    from cryopick.batch.run import run_batch
    from cryopick.io.coords import read_coords
    from cryopick.io.micrograph import read_micrograph
    from cryopick.inference.mask import MaskConfig, micrograph_mask, picks_outside
    from cryopick.inference.picker import load_picker
    from cryopick.preprocessing.binning import preprocess

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "benchmarks/out/campaign_model")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/empiar10017")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out/campaign_mask")
    args = ap.parse_args()
    split = json.loads((args.data / "split.json").read_text())
    sets = {"unlabeled": split["unlabeled"], "test": split["test"]}
    names = sets["unlabeled"] + sets["test"]
    mics = [args.data / "micrographs" / f"{n}.mrc" for n in names]
    _, meta = load_picker(args.model)
    radius = meta.diameter / 2
    default = MaskConfig(enabled=True)

    runs = {}
    for label, mask in (("no mask", MaskConfig()), ("default mask", default)):
        out = args.out / label.replace(" ", "_")
        summary = run_batch(args.model, mics, out, BatchConfig(mask=mask), "local", progress=False)
        assert summary.failed == 0, summary.failures
        runs[label] = {n: read_coords(out / "picks" / f"{n}.star") for n in names}
    truth = {n: read_coords(args.data / "coords" / f"{n}.star")[0] for n in names}

    # per micrograph: binned image for the mask sweep, and where the unmasked picks lie
    binned = {}
    for n, mic in zip(names, mics):
        m = read_micrograph(mic)
        binned[n] = preprocess(m.data, meta.preprocess, m.pixel_size)

    rows = []
    settings = [("no mask", None, 0.0)] + [(f"max_sigma {s:g}, dilate {d:g}", MaskConfig(True, max_sigma=s), d)
                                           for s, d in SWEEP]
    for label, cfg, dilate in settings:
        row: dict[str, object] = {"setting": label + (" (default)" if cfg == default and dilate == 0 else "")}
        for set_name, set_names in sets.items():
            pairs, removed, removed_true, flagged, removed_band = [], 0, 0, [], 0
            for n in set_names:
                xy, sc = runs["no mask"][n]
                if cfg is not None:
                    mk = micrograph_mask(binned[n], meta.diameter, cfg, dilate)
                    keep = picks_outside(mk, binned[n], xy)
                    tkeep = picks_outside(mk, binned[n], truth[n])
                    h, w = binned[n].original_shape
                    gone = xy[~keep]
                    removed_band += int(((gone < BAND) | (gone > np.array([w, h]) - BAND)).any(axis=1).sum())
                    removed += int((~keep).sum())
                    removed_true += int((~tkeep).sum())
                    flagged.append(float(mk.mean()))
                    xy, sc = xy[keep], sc[keep]
                pairs.append((xy, sc, truth[n]))
            s = score(pairs, radius)
            row[set_name] = {**s, "removed": removed, "removed_in_border_band": removed_band,
                             "expert_picks_in_mask": removed_true,
                             "flagged_area": float(np.mean(flagged)) if flagged else 0.0}
        rows.append(row)
    # the real masked campaign must agree with the sweep's default row
    for n in names:
        mk = micrograph_mask(binned[n], meta.diameter, default)
        xy, _ = runs["no mask"][n]
        assert len(runs["default mask"][n][0]) == int(picks_outside(mk, binned[n], xy).sum()), n
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))

    def fmt(r: dict, k: str) -> str:
        v = r[k]
        return (f"{v['picks']} | {v['removed']} ({v['removed_in_border_band']} in border band) | "
                f"{v['expert_picks_in_mask']} | {v['flagged_area']:.1%} | {v['precision']:.3f} | "
                f"{v['recall']:.3f} | {v['f1']:.3f}")

    header = ("| setting | picks kept | picks removed | expert picks in mask | area flagged | precision | "
              "recall | F1 |\n|---|---|---|---|---|---|---|---|")
    dflt = next(r for r in rows if str(r["setting"]).endswith("(default)"))

    def verdict(set_name: str) -> str:
        b, d = rows[0][set_name], dflt[set_name]
        removed_true = b["matched"] - d["matched"]
        share = removed_true / d["removed"] if d["removed"] else float("nan")
        return (f"on {set_name} the default mask removed {d['removed']} picks, of which {share:.0%} matched an "
                f"expert pick (against {b['matched'] / max(b['picks'], 1):.0%} of all picks): precision "
                f"{b['precision']:.3f} -> {d['precision']:.3f}, recall {b['recall']:.3f} -> {d['recall']:.3f}, "
                f"F1 {b['f1']:.3f} -> {d['f1']:.3f}")
    body = (
        f"Model: `{args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model}` "
        f"(width {meta.model.base_width}, trained on the 5 `labeled` micrographs; threshold "
        f"{meta.threshold:.3f}, min distance {meta.resolved_min_distance():.1f} px). Matching radius "
        f"{radius:g} px. Picks are those of real `cryopick campaign` runs (no mask / default mask); other "
        f"settings apply the mask to the unmasked picks. \"Expert picks in mask\": true particles lying in "
        f"flagged regions. Border band: within {BAND} px of the edge, where these JPEG-derived "
        f"micrographs carry filter stripes.\n\n"
        f"**unlabeled** ({len(sets['unlabeled'])} micrographs, {sum(len(truth[n]) for n in sets['unlabeled'])} "
        f"expert picks; used to compare settings)\n\n{header}\n"
        + "\n".join(f"| {r['setting']} | {fmt(r, 'unlabeled')} |" for r in rows)
        + f"\n\n**test** ({len(sets['test'])} micrographs, {sum(len(truth[n]) for n in sets['test'])} expert picks)"
        f"\n\n{header}\n" + "\n".join(f"| {r['setting']} | {fmt(r, 'test')} |" for r in rows)
        + f"\n\nDefault mask (`--mask`: window 3 diameters, max_sigma 5, no dilation): {verdict('unlabeled')}; "
        f"{verdict('test')}. Raw figures: "
        f"`{(args.out / 'results.json').relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}`."
    )
    update_section("campaign_mask", "Campaign mask (carbon edges, thick ice) on EMPIAR-10017", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
