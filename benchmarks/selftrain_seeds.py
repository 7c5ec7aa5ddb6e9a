"""Self-training over repeated campaigns: does a round lose F1 against round 0, and by how much does it gain?

Reads finished campaign directories (from ``benchmarks/selftrain_empiar.py``, run once per seed)
and writes one ``docs/benchmarks.md`` section: per campaign the test F1 of every round at the
campaign's own threshold, its change against round 0, test AP, and the best F1 any threshold
reaches on test (*oracle*, read off the round's ``pr_curve.csv``: a diagnosis of how much of a
change is the model and how much the threshold, never used to choose anything); then the mean,
spread and worst change per round over the campaigns. Nothing is retrained.

    python benchmarks/selftrain_seeds.py --setting 1 DIR [DIR ...] [--setting 5 DIR ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
GOALS = {"1": 0.05, "5": 0.02}


def oracle_f1(round_dir: Path) -> float:
    """Highest F1 along the round's test precision-recall curve (any threshold)."""
    best = 0.0
    with (round_dir / "pr_curve.csv").open() as f:
        for row in csv.DictReader(f):
            p, r = float(row["precision"]), float(row["recall"])
            best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    return best


def load_campaign(campaign: Path) -> dict[str, Any]:
    """Per-round figures of one finished campaign directory."""
    state_file = campaign / "state.json"
    if not state_file.is_file():
        raise SystemExit(f"{campaign}: no state.json, not a campaign directory (or not started)")
    state = json.loads(state_file.read_text())
    cfg = json.loads((campaign / "campaign.json").read_text())
    rounds = []
    for r in state["completed_rounds"]:
        rd = campaign / f"round_{r:03d}"
        m = json.loads((rd / "metrics.json").read_text())
        kept = json.loads((rd / "config.json").read_text()).get("result", {}).get("best_step")
        rounds.append({"round": r, "f1": m["f1"], "ap": m["average_precision"], "threshold": m["threshold"],
                       "oracle": oracle_f1(rd), "kept": kept})
    if len(rounds) < 2:
        raise SystemExit(f"{campaign}: {len(rounds)} completed round(s); need round 0 and at least one more")
    return {"dir": campaign, "seed": cfg["train"]["seed"], "round0_model": cfg["selftrain"].get("round0_model"),
            "best_round": state.get("best_round"), "rounds": rounds}


def campaign_table(camps: list[dict[str, Any]]) -> str:
    n = max(len(c["rounds"]) for c in camps)
    head = ["campaign", "seed"] + [f"round {r} F1 (Δ)" for r in range(n)] + \
           [f"oracle F1 r{r}" for r in range(n)] + [f"AP r{r}" for r in range(n)] + ["kept steps", "handed over"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in camps:
        rs = c["rounds"]
        base = rs[0]["f1"]
        f1s = [f"{m['f1']:.3f}" + ("" if m["round"] == 0 else f" ({m['f1'] - base:+.3f})") for m in rs]
        pad = ["stopped"] * (n - len(rs))
        hand = c["best_round"]
        hand_s = f"round {hand}: {rs[hand]['f1']:.3f}" if hand is not None and hand < len(rs) else "–"
        row = [f"`{c['dir'].relative_to(REPO) if c['dir'].is_relative_to(REPO) else c['dir']}`", str(c["seed"])]
        row += f1s + pad + [f"{m['oracle']:.3f}" for m in rs] + pad + [f"{m['ap']:.3f}" for m in rs] + pad
        row += [" / ".join(str(m["kept"]) for m in rs[1:]), hand_s]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary(camps: list[dict[str, Any]], goal: float) -> str:
    """Mean ± SD, worst and best change against round 0 per round, at the campaign's threshold and oracle.

    A campaign that stopped early counts with its last round: that is the picker it ends with.
    """
    n = max(len(c["rounds"]) for c in camps)
    at = lambda rs, r: rs[min(r, len(rs) - 1)]  # noqa: E731
    lines = ["| round | campaigns | Δ F1 mean ± SD | worst Δ F1 | best Δ F1 | below round 0 | Δ oracle F1 mean | Δ AP mean |",
             "|---|---|---|---|---|---|---|---|"]
    for r in range(1, n):
        have = [c["rounds"] for c in camps]
        d = [at(rs, r)["f1"] - rs[0]["f1"] for rs in have]
        do = [at(rs, r)["oracle"] - rs[0]["oracle"] for rs in have]
        da = [at(rs, r)["ap"] - rs[0]["ap"] for rs in have]
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        below = sum(x < 0 for x in d)
        lines.append(f"| {r} | {len(d)} | {statistics.mean(d):+.3f} ± {sd:.3f} | {min(d):+.3f} | {max(d):+.3f} | "
                     f"{below} of {len(d)} | {statistics.mean(do):+.3f} | {statistics.mean(da):+.3f} |")
    best_mean = max(statistics.mean(at(c["rounds"], r)["f1"] - c["rounds"][0]["f1"] for c in camps) for r in range(1, n))
    lines += ["", f"Goal +{goal:.2f}: best mean gain over rounds {best_mean:+.3f}, "
              + ("met on average." if best_mean >= goal else "not met.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", nargs="+", action="append", required=True, metavar="LABELS[:CAPTION] DIR",
                   help="number of labeled micrographs (1 or 5), optionally ':' and a caption for the table, then the "
                        "campaign directories of that setting")
    p.add_argument("--section", default="selftrain-seeds")
    p.add_argument("--title", default="Self-training rounds over repeated campaigns (EMPIAR-10017, width 16)")
    p.add_argument("--note", default="", help="a paragraph placed above the tables (e.g. what the runs share)")
    p.add_argument("--no-doc", action="store_true", help="print only")
    args = p.parse_args(argv)
    body = [
        "Each row is one campaign of `benchmarks/selftrain_empiar.py --width 16 --patch-size 128 --steps 400 "
        "--val-every 100 --rounds 3` (current defaults: intensity augmentation, warm-start floor, count-matched "
        "threshold) on EMPIAR-10017; campaigns of one setting differ in `train.seed` (initial weights) and in "
        "their random patch draws. *F1* is on the 5 `test` micrographs at the threshold the campaign chose "
        "(no test label is used for it); *oracle F1* is the best F1 any threshold reaches on `test`, a diagnosis "
        "(model against threshold), never a result; *kept steps* are the checkpoints rounds 1.. kept (0: the "
        "round kept its warm start); *handed over* is the round with the highest validation F1, whose picks a "
        "campaign reports as its best; *stopped*: the campaign ended earlier (it counts with its last round below).",
    ]
    if args.note:
        body += ["", args.note]
    for setting in args.setting:
        labels, _, caption = setting[0].partition(":")
        dirs = [Path(d).resolve() for d in setting[1:]]
        if labels not in GOALS or not dirs:
            p.error(f"--setting {' '.join(setting)}: expected 1 or 5 followed by campaign directories")
        camps = [load_campaign(d) for d in dirs]
        word = "micrograph" if labels == "1" else "micrographs"
        head = f"**{labels} labeled {word}, {len(camps)} campaign{'s' if len(camps) > 1 else ''}" + (f", {caption}" if caption else "")
        body += ["", head + "**", "", campaign_table(camps), "", summary(camps, GOALS[labels])]
    text = "\n".join(body)
    if args.no_doc:
        print(text)
    else:
        from _report import update_section

        update_section(args.section, args.title, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
