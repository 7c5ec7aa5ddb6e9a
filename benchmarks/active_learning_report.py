"""Merge the cached active-learning results into one table (docs/benchmarks.md) and a PNG.

Called by ``python benchmarks/active_learning.py --merge``; reads every
``benchmarks/records/active_learning/<data>/seed<k>/<arm>/summary.json`` (the arms' summaries kept in the
repository, ``benchmarks/_cache.py``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from _report import REPO, batch_sizes, update_section
from label_efficiency_report import ms

PNG = REPO / "docs" / "img" / "active_learning.png"
STRATEGIES = ("combined", "random")


def load(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/seed*/*/summary.json"))]


def table(results: list[dict[str, Any]], data: str) -> tuple[str, dict[str, Any]]:
    """Markdown rows of one data set (one per acquisition step), and the points of its plot."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["data"] == data:
            by[r["arm"]].append(r)
    ceil = by.get("ceiling", [])
    ceil_best = [c["rounds"][0]["best_f1"] for c in ceil]
    ceil_f1 = [c["rounds"][0]["f1"] for c in ceil]
    lines = [f"**{data}**; ceiling (every non-test micrograph labeled whole, {ceil[0]['n_labeled'] if ceil else '?'} "
             f"particles): F1 at its threshold {ms(ceil_f1)}, best {ms(ceil_best)}", "",
             "| regions | strategy | labeled particles | correction clicks | F1 at the stored threshold | best F1 | "
             "share of the ceiling (stored) | s per round |", "|---|---|---|---|---|---|---|---|"]
    points: dict[str, Any] = {"ceiling": float(np.mean(ceil_f1)) if ceil_f1 else None}
    for arm in STRATEGIES:
        runs = by.get(arm, [])
        if not runs:
            continue
        steps: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in runs:
            for s in r["steps"]:
                steps[int(s["regions"])].append(s)
        pts = []
        for n_regions in sorted(steps):
            rows = steps[n_regions]
            f1 = [s["f1"] for s in rows]
            share = [s["f1"] / points["ceiling"] for s in rows] if points["ceiling"] else []
            lines.append(f"| {n_regions} | {arm} | {ms([s['n_labeled'] for s in rows], 0)} | {ms([s['clicks'] for s in rows], 0)} | "
                         f"{ms(f1)} | {ms([s['best_f1'] for s in rows])} | {ms(share, 2)} | {ms([s['seconds'] for s in rows], 0)} |")
            pts.append((float(np.mean([s["n_labeled"] for s in rows])), float(np.mean(f1)), float(np.std(f1)) if len(f1) > 1 else 0.0))
        points[arm] = pts
    return "\n".join(lines), points


def _at(pts: list[tuple[float, float, float]], n: float) -> float | None:
    """An arm's mean F1 at ``n`` labeled particles, linear in log(n) between its steps; None outside them."""
    xs, ys = np.log([p[0] for p in pts]), [p[1] for p in pts]
    return float(np.interp(np.log(n), xs, ys)) if xs[0] <= np.log(n) <= xs[-1] else None


def goals(pts: dict[str, Any]) -> str:
    """The issue's three goals for one data set, from the mean curves: the default against random at equal and at
    twice the labels (after the first acquisition), and its share of the ceiling at 300 labeled particles."""
    comb, rand, ceil = pts.get("combined"), pts.get("random"), pts.get("ceiling")
    if not comb or not rand:
        return "Goals: not measured (an arm is missing)."
    acquired = comb[1:]  # the first step is the start both arms share
    equal = [(n, f - r) for n, f, _ in acquired if (r := _at(rand, n)) is not None]
    double = [(n, f - r) for n, f, _ in acquired if (r := _at(rand, 2 * n)) is not None]
    worst = min(equal, key=lambda t: t[1])
    text = [f"never below random at equal labels: worst difference {worst[1]:+.3f} at {worst[0]:.0f} particles "
            f"({'met' if worst[1] >= 0 else 'missed'}; {len(equal)} steps compared)"]
    if double:
        lo = min(double, key=lambda t: t[1])
        text.append(f"as good as random with twice the labels: worst difference {lo[1]:+.3f} at {lo[0]:.0f} particles "
                    f"({'met' if lo[1] >= 0 else 'missed'}; {len(double)} steps compared, where random reached twice the labels)")
    if ceil:
        upto = [f for n, f, _ in comb if n <= 300] + ([v] if (v := _at(comb, 300)) is not None else [])
        share = max(upto) / ceil if upto else float("nan")
        text.append(f"best share of the ceiling with at most 300 labeled particles: {share:.3f} "
                    f"({'met' if share >= 0.97 else 'missed'}; goal 0.97)")
    else:
        text.append("share of the ceiling: not measured (no ceiling run)")
    return "Goals (mean curves over seeds, F1 at the stored threshold): " + "; ".join(text) + "."


def plot(points: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(points), figsize=(5.5 * len(points), 4.2), squeeze=False)
    for ax, (data, pts) in zip(axes[0], points.items()):
        for arm, style in zip(STRATEGIES, ("o-", "s--")):
            if pts.get(arm):
                n, f1, sd = zip(*pts[arm])
                ax.errorbar(n, f1, yerr=sd, fmt=style, capsize=3, label=f"{arm} regions")
        if pts.get("ceiling") is not None:
            ax.axhline(pts["ceiling"], color="k", lw=0.8, label="ceiling (all expert picks)")
            ax.axhline(0.97 * pts["ceiling"], color="k", lw=0.6, ls=":", label="97 % of the ceiling")
        ax.axvline(300, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([12.5 * 2 ** k for k in range(12)]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("labeled particles")
        ax.set_ylabel("F1 on test at the stored threshold")
        ax.set_title(data)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _setting_args(argv: list[str]) -> list[str]:
    """A run's arguments without ``--cache DIR`` (where it was stored, not how it ran)."""
    out, skip = [], False
    for a in argv:
        if skip or a == "--cache":
            skip = not skip
            continue
        out.append(a)
    return out


def merge(root: Path) -> None:
    results = load(root)
    if not results:
        raise SystemExit(f"{root}: no recorded runs to merge; docs/benchmarks.md is left as it is")
    datas = sorted({r["data"] for r in results})
    parts, points = [], {}
    for data in datas:
        text, pts = table(results, data)
        parts.append(text + "\n\n" + goals(pts))
        points[data] = pts
    if points:
        plot(points, PNG)
    runs = sorted({" ".join(_setting_args(r["argv"][1:])) for r in results})
    body = "\n\n".join(parts) + (
        "\n\nEach arm was run by `python benchmarks/active_learning.py` with: " + "; ".join(f"`{a}`" for a in runs) + ". "
        "An oracle reveals the expert picks inside each region a strategy asks for (a square of 10 particle diameters, "
        "labeled completely, ignored outside); every arm starts from the same seeded random region and round 0, and runs "
        f"one teacher–student round (width 16, the steps per round in its command, batch {batch_sizes(results, 8)}, 2 DDP workers) after each "
        "acquisition. combined: the round's own `suggestions.csv` (the default strategy); random: seeded random regions. "
        "Correction clicks: cumulative false picks + missed particles of the round's picks inside each acquired region "
        "(the first region: one click per particle). F1 on the `test` micrographs. Cells: mean ± sd (number of seeds). "
        "Seconds per round: wall time, other runs often sharing the 2 cores (upper bounds). "
        f"![F1 against labeled particles](img/{PNG.name})")
    commits = sorted({r.get("commit", "unknown") for r in results})
    update_section("active-learning", "Active learning: suggested regions against random regions", body, commits=commits,
                   machines=[r.get("machine") for r in results])
