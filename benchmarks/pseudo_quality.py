"""How right are a campaign's pseudo-labels? Scores them against the expert picks they never saw.

For every round r >= 1 of finished campaign directories, rebuilds the pseudo-label masks the round
trained on (its stored ``round_r/pseudo/*.npz`` heatmaps through the labeler the orchestrator built
from ``round_{r-1}/calibration.json``) and compares them with the expert picks of those unlabeled
micrographs (EMPIAR-10017 has picks for all of them; campaigns never read them). Per round:

- pseudo particles: connected particle regions of the masks, and the share of them within one
  particle radius of an expert pick (their precision);
- where the expert particles fell: the share whose centre pixel was labeled particle, background
  (the harmful error: a real particle taught as background) or ignored.

With ``--ignore-unsure on|off`` the masks are rebuilt with ``selftrain.ignore_unsure_peaks`` set
that way instead of as the campaign ran (the same heatmaps and calibration, so the two rules are
compared on identical inputs), into a section of their own.

Writes the ``pseudo-quality`` section of docs/benchmarks.md. Nothing is trained.

    python benchmarks/pseudo_quality.py DIR [DIR ...] [--ignore-unsure as-run|on|off]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CRYOPICK_DATA", REPO.parent / "shared" / "data" / "empiar10017"))
sys.path.insert(0, str(REPO / "benchmarks"))


def round_quality(campaign: Path, rnd: int, cfg: Any) -> dict[str, float]:
    """Pseudo-label quality of round ``rnd`` (>= 1) against the unlabeled micrographs' expert picks."""
    from scipy import ndimage

    from cryopick.training.dataset import coords_for
    from cryopick.distributed.orchestrator import round_labeler
    from cryopick.io.coords import read_coords
    from cryopick.evaluation.metrics import match
    from cryopick.selftrain.scoring import load_heatmap

    labeler = round_labeler(cfg, campaign / f"round_{rnd - 1:03d}")
    n_regions = n_hit = 0
    n_background = n_pixels = 0
    where = np.zeros(3)  # expert centres on particle / background / ignored labels
    for mic in map(Path, cfg.data.unlabeled):
        truth, _ = read_coords(coords_for(mic, Path(cfg.data.coords)))
        sh = load_heatmap(campaign / f"round_{rnd:03d}" / "pseudo" / f"{mic.stem}.npz", truth)
        scale = sh.mean_scale
        xy = sh.true_xy / np.array([sh.scale[1], sh.scale[0]])  # binned px, as the mask
        mask = labeler.mask(sh.heatmap, cfg.data.diameter, scale)
        n_background += int((mask == 0).sum())
        n_pixels += mask.size
        regions, n = ndimage.label(mask == 1)
        if n:
            centres = np.array(ndimage.center_of_mass(mask == 1, regions, range(1, n + 1)))[:, ::-1]  # (x, y)
            n_regions += n
            n_hit += int(match(centres, np.ones(n), xy, cfg.data.diameter / 2.0 / scale).sum())
        cx = np.clip(np.round(xy[:, 0]).astype(int), 0, mask.shape[1] - 1)
        cy = np.clip(np.round(xy[:, 1]).astype(int), 0, mask.shape[0] - 1)
        v = mask[cy, cx]
        where += [(v == 1).sum(), (v == 0).sum(), (v < 0).sum()]
    n_true = where.sum()
    return {"regions": n_regions, "precision": n_hit / n_regions if n_regions else float("nan"),
            "on_particle": where[0] / n_true, "on_background": where[1] / n_true, "on_ignored": where[2] / n_true,
            "n_true": int(n_true), "background": n_background / n_pixels}


def campaign_rows(campaign: Path, ignore_unsure: bool | None = None) -> list[dict[str, Any]]:
    """One row per round >= 1; ``ignore_unsure`` overrides the campaign's rule (None: as it ran)."""
    from cryopick.config import from_dict
    from cryopick.selftrain.config import SelftrainConfig

    state = json.loads((campaign / "state.json").read_text())
    raw = json.loads((campaign / "campaign.json").read_text())
    resolved = raw.pop("resolved")
    raw.pop("cryopick_version", None)
    # campaigns from before the key ran without the rule: rebuild their masks as they trained on them
    raw.setdefault("selftrain", {}).setdefault("ignore_unsure_peaks", False)
    if ignore_unsure is not None:
        raw["selftrain"]["ignore_unsure_peaks"] = ignore_unsure
    cfg = from_dict(SelftrainConfig, raw, "campaign")
    cfg.data.unlabeled = resolved["unlabeled"]  # globs and manifests resolved as the campaign saw them
    rows = []
    for r in state["completed_rounds"]:
        if r == 0:
            continue
        m = json.loads((campaign / f"round_{r:03d}" / "metrics.json").read_text())
        rows.append({"campaign": campaign, "round": r, "rule": cfg.selftrain.ignore_unsure_peaks,
                     "labeled": len(cfg.data.labeled), "f1": m["f1"], **round_quality(campaign, r, cfg)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaigns", nargs="+", type=Path, help="finished campaign directories")
    p.add_argument("--section", help="default: pseudo-quality, or pseudo-quality-on / -off with --ignore-unsure")
    p.add_argument("--no-doc", action="store_true", help="print only")
    p.add_argument("--ignore-unsure", choices=["as-run", "on", "off"], default="as-run",
                   help="rebuild the masks with selftrain.ignore_unsure_peaks on or off (default: as each campaign ran)")
    args = p.parse_args(argv)
    override = None if args.ignore_unsure == "as-run" else args.ignore_unsure == "on"
    lines = ["| campaign | labeled | round | unsure peaks ignored | pseudo particles | their precision | "
             "expert particles on particle / background / ignored | background pixels | test F1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in args.campaigns:
        if not (c / "state.json").is_file():
            p.error(f"{c}: not a campaign directory (no state.json)")
        for row in campaign_rows(c.resolve(), override):
            name = row["campaign"].relative_to(REPO) if row["campaign"].is_relative_to(REPO) else row["campaign"]
            lines.append(f"| `{name}` | {row['labeled']} | {row['round']} | {'yes' if row['rule'] else 'no'} | "
                         f"{row['regions']} | {row['precision']:.3f} | "
                         f"{row['on_particle']:.3f} / {row['on_background']:.3f} / {row['on_ignored']:.3f} "
                         f"(of {row['n_true']}) | {row['background']:.3f} | {row['f1']:.3f} |")
    body = ("Pseudo-labels of finished self-training campaigns scored against the expert picks of the 10 `unlabeled` "
            "EMPIAR-10017 micrographs, which the campaigns never read: *pseudo particles* are connected particle regions "
            "of the masks a round trained on (rebuilt from its stored heatmaps and the previous round's calibration, as "
            "the orchestrator builds them), *their precision* the share within one particle radius of an expert pick; "
            "the last columns say where the expert particles' centres fell: labeled particle, labeled background (a real "
            "particle taught as background), or ignored; *background pixels* the share of all pixels labeled background "
            "(after class balancing). *Unsure peaks ignored*: `selftrain.ignore_unsure_peaks`, "
            + ("as each campaign ran." if override is None else
               f"set {'on' if override else 'off'} for every campaign here, whatever it ran with: the masks are rebuilt "
               "from the same heatmaps and calibration, so only the rule differs; *test F1* is the campaign's, "
               "trained with its own rule.") + "\n\n" + "\n".join(lines))
    if args.no_doc:
        print(body)
    else:
        from _report import update_section

        title = "Pseudo-label quality against the expert picks (EMPIAR-10017)"
        if override is not None:
            title += f", unsure peaks {'ignored' if override else 'not ignored'}"
        section = args.section or ("pseudo-quality" if override is None else f"pseudo-quality-{args.ignore_unsure}")
        update_section(section, title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
