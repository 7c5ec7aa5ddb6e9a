"""Which Tune threshold transfers when a campaign is labeled in a few regions? Rules replayed on cached rounds.

A campaign labeled in regions only has no micrograph labeled whole, so no expected count: it stores Tune's
threshold, chosen on the validation strips of its boxes (the bottom fifth of each), a handful of particles in the
first rounds. Each rule below picks a threshold from a round's ``tune.csv`` trials at the round's stored peak
distance; that threshold is then scored on the round's scored micrographs from its ``pr_curve.csv`` (no new
picking). Rules:

* ``product``: the stored threshold (the lowest within ``TUNE_TOLERANCE`` F1 of the best trial);
* ``lowest k``: the lowest trial threshold within k binomial standard errors, sqrt(F1 (1 - F1) / n), of the best;
* ``centre k``: the trial threshold nearest the middle, in log-odds, of those within k standard errors;
* ``0.5``: a fixed threshold.

n, the strips' expert particles, is not in ``tune.csv``: it is the smallest count for which every trial's matches
and picks are whole numbers. Rounds are those of ``benchmarks/active_learning.py`` arms under the given roots (each
seed's round 0 once: the arms adopt the base arm's model). Dev roots (``--score-on dev``) to choose; test roots only
as a report.

    python research/al_threshold_rules.py benchmarks/out/active_learning/empiar10028/dev benchmarks/out/active_learning/empiar10017/dev
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

K = (0.5, 1.0)


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def strip_count(trials: list[dict[str, float]]) -> int:
    """The validation particles behind ``trials``: the smallest n for which every trial's matches (recall x n) and
    picks (matches / precision) are whole numbers."""
    def whole(x: float) -> bool:
        return abs(x - round(x)) < 1e-3 * max(1.0, abs(x))

    for n in range(1, 5000):
        if all(whole(t["recall"] * n) and (t["precision"] == 0 or whole(t["recall"] * n / t["precision"])) for t in trials):
            return n
    raise ValueError("no particle count fits the trials' recalls")


def rules(trials: list[dict[str, float]], stored: float) -> dict[str, float]:
    """The threshold each rule chooses from one peak distance's ``trials``."""
    f1 = np.array([t["f1"] for t in trials])
    th = np.array([t["threshold"] for t in trials])
    best = float(f1.max())
    se = float(np.sqrt(max(best * (1 - best), 0.0) / strip_count(trials))) if best > 0 else 0.0
    out = {"product": stored, "0.5": 0.5}
    for k in K:
        band = th[f1 >= best - k * se - 1e-9]
        out[f"lowest {k:g}"] = float(band.min())
        logit = np.log(band / (1 - band))
        out[f"centre {k:g}"] = float(band[np.argmin(np.abs(logit - 0.5 * (logit.min() + logit.max())))])
    return out


def f1_at(curve: list[dict[str, float]], threshold: float) -> float:
    """F1 keeping the picks at or above ``threshold`` (the last cut point of ``pr_curve.csv`` at or above it)."""
    kept = [r for r in curve if r["threshold"] >= threshold]
    if not kept:
        return 0.0
    p, r = kept[-1]["precision"], kept[-1]["recall"]
    return 2 * p * r / (p + r) if p + r else 0.0


def rounds_of(root: Path) -> list[Path]:
    """Every completed round under ``root`` (seed*/arm/round_*), each seed's round 0 from its base arm only."""
    out = []
    for rd in sorted(root.glob("seed*/*/round_*")):
        if not (rd / "metrics.json").is_file() or (rd.name == "round_000" and rd.parent.name != "base"):
            continue
        out.append(rd)
    return out


def main() -> None:
    table: dict[str, list[float]] = {}
    for root in map(Path, sys.argv[1:]):
        rows: dict[str, list[float]] = {}
        for rd in rounds_of(root):
            m = json.loads((rd / "metrics.json").read_text())
            trials = [t for t in read_csv(rd / "tune.csv") if abs(t["min_distance"] - m["min_distance"]) < 1e-6]
            curve = read_csv(rd / "pr_curve.csv")
            best = max(2 * r["precision"] * r["recall"] / (r["precision"] + r["recall"] or 1) for r in curve)
            chosen = rules(trials, m["threshold"])
            for name, t in chosen.items():
                rows.setdefault(name, []).append(f1_at(curve, t) - best)
            print(f"{rd.relative_to(root)}: n {strip_count(trials):3d}, best {best:.3f}; " +
                  ", ".join(f"{k} {t:.1f}:{f1_at(curve, t) - best:+.3f}" for k, t in chosen.items()), flush=True)
        for name, gaps in rows.items():
            print(f"{root}: {name:10s} F1 − best {np.mean(gaps):+.3f} (worst {np.min(gaps):+.3f}, {len(gaps)} rounds)")
            table.setdefault(name, []).append(float(np.mean(gaps)))
    for name, means in table.items():
        print(f"mean over roots: {name:10s} {np.mean(means):+.3f}  per root {', '.join(f'{x:+.3f}' for x in means)}")


if __name__ == "__main__":
    main()
