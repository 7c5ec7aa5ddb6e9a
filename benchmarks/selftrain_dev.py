"""Self-training campaigns scored on the dev set: the micrographs they pseudo-label.

A campaign's own figures are on ``test``, which chooses nothing. Settings are chosen here instead, on
the 10 ``unlabeled`` micrographs, whose expert picks campaigns never read: per round, F1 of the kept
model at the campaign's own threshold and peak distance (what a user would get on the micrographs
self-training is for) and the best F1 any threshold reaches. The dev heatmaps of round r's model are
round r+1's ``pseudo/`` files, else those in ``round_r/heatmaps/``, else they are predicted there once.

    python benchmarks/selftrain_dev.py --setting CAPTION DIR [DIR ...] [--setting CAPTION DIR ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def campaign_rows(campaign: Path) -> list[dict[str, float]]:
    """Per completed round: dev F1 at the round's threshold, dev best F1, test F1 (from metrics.json)."""
    from cryopick.evaluation.metrics import best_threshold, score_at
    from cryopick.inference.picker import load_picker
    from cryopick.selftrain.scoring import CANDIDATE_FLOOR, pooled
    from selftrain_paired import campaign_data, round_heatmaps, rounds_of, with_picks

    cfg, data = campaign_data(campaign)
    out = []
    for rnd, m in enumerate(rounds_of(campaign)):
        border = load_picker(campaign / f"round_{rnd:03d}")[1].border
        items = with_picks(round_heatmaps(campaign, rnd, cfg, list(data.unlabeled)), list(data.unlabeled), data, border)
        curve = pooled(items, CANDIDATE_FLOOR, m["min_distance"], 1.0, cfg.data.diameter)
        out.append({"dev": score_at(curve, m["threshold"])[2], "dev_best": best_threshold(curve)[0], "test": m["f1"]})
    return out


def table(caption: str, camps: dict[Path, list[dict[str, float]]]) -> str:
    n = max(len(v) for v in camps.values())
    later = range(1, n)
    lines = [f"**{caption}**", "", "| campaign | round 0 dev F1 (best) | " + " | ".join(f"round {r} dev F1 (Δ) (best) | round {r} test F1 (Δ)" for r in later)
             + " |", "|" + "---|" * (2 + 2 * len(later))]
    for c, rows in camps.items():
        z = rows[0]
        cells = [f"{z['dev']:.3f} ({z['dev_best']:.3f})"]
        for r in later:
            x = rows[min(r, len(rows) - 1)]  # a campaign that stopped counts with its last round
            cells += [f"{x['dev']:.3f} ({x['dev'] - z['dev']:+.3f}) ({x['dev_best']:.3f})", f"{x['test']:.3f} ({x['test'] - z['test']:+.3f})"]
        lines.append(f"| {c.relative_to(REPO) if c.is_relative_to(REPO) else c} | " + " | ".join(cells) + " |")
    for r in later:
        dev = [rows[min(r, len(rows) - 1)]["dev"] - rows[0]["dev"] for rows in camps.values()]
        test = [rows[min(r, len(rows) - 1)]["test"] - rows[0]["test"] for rows in camps.values()]
        lines.append(f"\nRound {r}: dev Δ {statistics.mean(dev):+.3f}{sd(dev)}, test Δ {statistics.mean(test):+.3f}{sd(test)} "
                     f"(mean{' ± SD' if len(dev) > 1 else ''} over {len(dev)}).")
    return "\n".join(lines)


def sd(v: list[float]) -> str:
    return f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", nargs="+", action="append", required=True, metavar="CAPTION DIR",
                    help="a caption for the table, then finished campaign directories")
    ap.add_argument("--section", default="selftrain-dev")
    ap.add_argument("--title", default="Self-training campaigns on the dev set")
    ap.add_argument("--note", default="", help="text under the tables (the reading)")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    parts = []
    for caption, *dirs in args.setting:
        if not dirs:
            raise SystemExit(f"--setting {caption}: no campaign directory given")
        parts.append(table(caption, {Path(d).resolve(): campaign_rows(Path(d).resolve()) for d in dirs}))
    text = "\n\n".join(parts) + (f"\n\n{args.note}" if args.note else "")
    if args.no_doc:
        print(text)
    else:
        from _report import update_section

        update_section(args.section, args.title, text)
    print(json.dumps({"settings": len(parts)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
