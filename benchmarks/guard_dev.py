"""Does the validation strip judge a self-training round the way unseen micrographs do?

A round r >= 1 starts from round r-1's weights and keeps them unless one of its checkpoints scores
at least as high on the validation picks. With one labeled micrograph those picks are a strip of
that micrograph (about 100 picks), and most one-label rounds kept their start. This script asks
whether that verdict agrees with micrographs the campaign never had labels for.

For every trained round r >= 1 of finished campaign directories it compares two models:

- *start*: round r-1's kept weights (their dev heatmaps are the round's ``pseudo/`` files), where a
  warm-started round began (a fresh round, ``selftrain.warm_start: false``, begins from random weights);
- *final*: the round's last weights (step N), read from the Ray Train checkpoint in ``ray_results/``.

On the dev set (the 10 ``unlabeled`` micrographs' expert picks, which campaigns never read) it reports
AP and the best F1 at any threshold (the ranking, apart from the threshold rule; campaigns' own
operating points are in ``selftrain_dev.py``); beside them the strip F1 the campaign saw. ``--test`` adds the same on ``test`` (report only; nothing is chosen on it). Nothing is
trained; the final weights are predicted once and their heatmaps cached beside the checkpoint.

    python benchmarks/guard_dev.py DIR [DIR ...] [--test]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def final_weights(campaign: Path, rnd: int) -> Path | None:
    """The round's last Ray Train checkpoint file, if the round trained."""
    hits = sorted(campaign.glob(f"ray_results/*_round_{rnd:03d}/checkpoint_*/train_state.pt"))
    return hits[-1] if hits else None


def scores(npzs: list[Path], mics: list[Path], data: Any, meta: Any, min_distance: float) -> dict[str, float]:
    """AP and best F1 (any threshold) of heatmaps against the expert picks."""
    from cryopick.evaluation.metrics import average_precision, best_threshold
    from cryopick.selftrain.scoring import CANDIDATE_FLOOR, pooled
    from selftrain_paired import with_picks

    curve = pooled(with_picks(npzs, mics, data, meta.border), CANDIDATE_FLOOR, min_distance, 1.0, meta.diameter)
    return {"ap": average_precision(curve), "best": best_threshold(curve)[0]}


def round_rows(campaign: Path, test: bool) -> list[dict[str, Any]]:
    """One row per trained round >= 1 of a campaign: strip, dev (and test) figures of start and final."""
    import torch

    from cryopick.inference.picker import load_picker
    from selftrain_paired import cached_heatmaps, campaign_data, rounds_of

    cfg, data = campaign_data(campaign)
    rows = []
    for rnd in range(len(rounds_of(campaign))):
        ckpt = final_weights(campaign, rnd)
        if rnd == 0 or ckpt is None:
            continue
        rdir, prev = campaign / f"round_{rnd:03d}", campaign / f"round_{rnd - 1:03d}"
        md = json.loads((prev / "metrics.json").read_text())["min_distance"]  # the start's, for both models
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        history = state["history"]
        model, meta = load_picker(rdir)
        model.load_state_dict(state["model"])
        final_dev = cached_heatmaps(model, meta, cfg, list(data.unlabeled), ckpt.parent / "dev")
        start_dev = [rdir / "pseudo" / f"{u.stem}.npz" for u in data.unlabeled]
        row = {"campaign": str(campaign.relative_to(REPO) if campaign.is_relative_to(REPO) else campaign),
               "labels": len(data.labeled), "arm": ("control" if cfg.selftrain.labeled_fraction >= 1.0 else "self-training")
               + ("" if cfg.selftrain.warm_start else ", fresh"),
               # as the campaign ran: campaigns older than the key ran without augmentation
               "augment": float(json.loads((campaign / "campaign.json").read_text())["train"].get("intensity_augment", 0)) > 0,
               "round": rnd, "kept_step": state["best_step"], "steps": history[-1]["step"],
               # a fresh round does not score its start (no step 0), so it has no strip verdict to compare
               "strip_start": history[0]["val_f1"] if history[0]["step"] == 0 else float("nan"),
               "strip_final": history[-1]["val_f1"],
               "dev_start": scores(start_dev, list(data.unlabeled), data, meta, md),
               "dev_final": scores(final_dev, list(data.unlabeled), data, meta, md)}
        if test:
            final_test = cached_heatmaps(model, meta, cfg, list(data.test), ckpt.parent / "test")
            start_test = [prev / "heatmaps" / f"{t.stem}.npz" for t in data.test]
            row["test_start"] = scores(start_test, list(data.test), data, meta, md)
            row["test_final"] = scores(final_test, list(data.test), data, meta, md)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else float("nan")


def _f(x: float, sign: str = "", digits: int = 3) -> str:
    return "—" if not np.isfinite(x) else f"{x:{sign}.{digits}f}"


def report(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per round, then per setting how the strip's verdict compares with dev."""
    has_test = all("test_final" in r for r in rows)
    head = "| campaign | round | kept step | strip F1 start → final | dev best F1 start → final (Δ) | dev AP start → final |"
    lines = [head + (" test best F1 start → final (Δ) |" if has_test else ""), "|" + "---|" * (6 + has_test)]
    for r in rows:
        ds, df = r["dev_start"], r["dev_final"]
        line = (f"| {r['campaign']} | {r['round']} | {r['kept_step']} of {r['steps']} | {_f(r['strip_start'])} → "
                f"{r['strip_final']:.3f} | {ds['best']:.3f} → {df['best']:.3f} ({df['best'] - ds['best']:+.3f}) | "
                f"{ds['ap']:.3f} → {df['ap']:.3f} |")
        if has_test:
            ts, tf = r["test_start"], r["test_final"]
            line += f" {ts['best']:.3f} → {tf['best']:.3f} ({tf['best'] - ts['best']:+.3f}) |"
        lines.append(line)
    groups: dict[tuple[int, str, bool], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["labels"], r["arm"], r["augment"]), []).append(r)
    lines += ["", "| labels | arm | intensity augmentation | rounds | strip Δ (mean) | dev best-F1 Δ, mean ± SD (rounds > 0) "
              "| corr(strip Δ, dev Δ) | same sign | dev AP Δ (mean) |" + (" test best-F1 Δ (mean) | corr(dev Δ, test Δ) |" if has_test else ""),
              "|" + "---|" * (9 + 2 * has_test)]
    for (labels, arm, aug), rs in sorted(groups.items()):
        strip = np.array([r["strip_final"] - r["strip_start"] for r in rs])
        dev = np.array([r["dev_final"]["best"] - r["dev_start"]["best"] for r in rs])
        ap = np.array([r["dev_final"]["ap"] - r["dev_start"]["ap"] for r in rs])
        sd = f" ± {dev.std(ddof=1):.3f}" if len(rs) > 1 else ""
        judged = np.isfinite(strip)  # fresh rounds have no strip verdict
        same = f"{(np.sign(strip[judged]) == np.sign(dev[judged])).sum()} of {judged.sum()}" if judged.any() else "—"
        line = (f"| {labels} | {arm} | {'on' if aug else 'off'} | {len(rs)} | {_f(strip[judged].mean(), '+') if judged.any() else '—'} "
                f"| {dev.mean():+.3f}{sd} ({(dev > 0).sum()}) | {_f(_corr(strip[judged], dev[judged]), digits=2)} "
                f"| {same} | {ap.mean():+.3f} |")
        if has_test:
            test = np.array([r["test_final"]["best"] - r["test_start"]["best"] for r in rs])
            line += f" {test.mean():+.3f} | {_f(_corr(dev, test), digits=2)} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("campaigns", nargs="+", type=Path)
    ap.add_argument("--test", action="store_true", help="also score both models on the test split (report only)")
    ap.add_argument("--csv", type=Path, help="write the rows here")
    ap.add_argument("--note", default="", help="text under the tables (the reading)")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    rows = [r for c in args.campaigns for r in round_rows(c.resolve(), args.test)]
    if not rows:
        raise SystemExit("no trained round >= 1 with a Ray Train checkpoint in these campaign directories")
    text = report(rows) + (f"\n\n{args.note}" if args.note else "")
    if args.no_doc:
        print(text)
    else:
        from _report import update_section

        update_section("guard-dev", "Does the validation strip judge a round as unseen micrographs do?", text)
    if args.csv:
        flat = [{k: v for k, v in r.items() if not isinstance(v, dict)} |
                {f"{k}_{s}": v[s] for k, v in r.items() if isinstance(v, dict) for s in v} for r in rows]
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(flat[0]))
            w.writeheader()
            w.writerows(flat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
