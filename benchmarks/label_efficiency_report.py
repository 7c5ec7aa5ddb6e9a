"""Merge the cached label-efficiency results into one table (docs/benchmarks.md) and a PNG.

Called by ``python benchmarks/label_efficiency.py --merge``; reads every
``benchmarks/records/label_efficiency/<data>/<test|dev>/seed<k>/<budget>/<arm>/summary.json``
(the arms' summaries kept in the repository, ``benchmarks/_cache.py``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from _report import REPO, batch_sizes, update_section

PNG = REPO / "docs" / "img" / "label_efficiency.png"
BUDGET_NAMES = {"1": "1 micrograph, complete", "5": "all labeled, complete", "s10": "10 % sparse", "s30": "30 % sparse"}


def load(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/*/seed*/**/summary.json"))]


def ms(values: list[float], digits: int = 3) -> str:
    """mean ± sd (n) of the values, or the one value."""
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (1)"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f} ({len(v)})"


def table(results: list[dict[str, Any]], data: str, score_on: str) -> tuple[str, dict[str, Any]]:
    """Markdown rows of one data set, and the points of its plot."""
    mine = [r for r in results if r["data"] == data and r["score_on"] == score_on]
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in mine:
        by[(r["budget"] if r["arm"] != "ceiling" else "*", r["arm"])].append(r)
    ceil = by.get(("*", "ceiling"), [])
    ceil_best = [c["rounds"][0]["best_f1"] for c in ceil]
    ceiling = float(np.mean(ceil_best)) if ceil_best else None
    lines = [f"**{data}**, scored on `{score_on}`; ceiling (every non-test micrograph expert-labeled, "
             f"{ceil[0]['n_labeled'] if ceil else '?'} particles): best F1 {ms(ceil_best)}, at its threshold "
             f"{ms([c['rounds'][0]['f1'] for c in ceil])}", "",
             "| budget | labeled particles | round 0 best F1 | self-trained best F1 | round 0 F1 at its threshold | "
             "self-trained F1 at its threshold | self-trained best − at its threshold | gap closed | "
             "offline self-training best F1 | Topaz best F1 | s per round (self-training) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    points: dict[str, Any] = {"ceiling": ceiling}
    goals: dict[str, Any] = {}
    for budget in BUDGET_NAMES:
        st = by.get((budget, "selftrain"), [])
        if not st:
            continue
        r0 = [s["rounds"][0] for s in st]
        last = [s["rounds"][-1] for s in st]
        gaps = [(b["best_f1"] - a["best_f1"]) / (ceiling - a["best_f1"]) for a, b in zip(r0, last)
                if ceiling is not None and ceiling - a["best_f1"] > 1e-6]
        stored_gap = [b["best_f1"] - b["f1"] for b in last]
        goals[budget] = {"gap": gaps, "below": sum(b["best_f1"] < a["best_f1"] for a, b in zip(r0, last)), "n": len(st),
                         "stored_gap": stored_gap, "stored": [b["f1"] for b in last],
                         "round0": float(np.mean([a["best_f1"] for a in r0])), "ceiling": ceiling}
        per_round = [x["seconds"] for s in st for x in s["rounds"][1:] if x.get("seconds")]
        off = [s["rounds"][-1]["best_f1"] for s in by.get((budget, "offline"), [])]
        topaz = [t["best_f1"] for t in by.get((budget, "topaz"), [])]
        n = st[0]["n_labeled"]
        lines.append(f"| {BUDGET_NAMES[budget]} | {n} | {ms([a['best_f1'] for a in r0])} | {ms([b['best_f1'] for b in last])} | "
                     f"{ms([a['f1'] for a in r0])} | {ms([b['f1'] for b in last])} | {ms(stored_gap)} | {ms(gaps)} | "
                     f"{ms(off)} | {ms(topaz)} | "
                     f"{ms(per_round, 0)} |")
        points[budget] = {"n": n, "round0": np.mean([a["best_f1"] for a in r0]), "self": np.mean([b["best_f1"] for b in last]),
                          "topaz": np.mean(topaz) if topaz else None}
    lines += ["", goal_lines(goals)]
    return "\n".join(lines), points


def goal_lines(goals: dict[str, Any]) -> str:
    """Issue #19's goals on one data set, from the measured budgets (mean over seeds)."""
    out = []
    for budget in ("1", "s10"):
        g = goals.get(budget)
        if not g:
            out.append(f"{BUDGET_NAMES[budget]}: no recorded run")
            continue
        if not g["gap"]:
            out.append(f"{BUDGET_NAMES[budget]}: no gap to close (round 0 best F1 {g['round0']:.3f}, ceiling "
                       f"{g['ceiling'] if g['ceiling'] is None else format(g['ceiling'], '.3f')}), {g['below']} of {g['n']} "
                       f"seeds below round 0 (goal 0): **{'missed' if g['below'] else 'not judged'}**")
            continue
        mean = float(np.mean(g["gap"]))
        ok = mean >= 0.5 and g["below"] == 0
        verdict = "missed" if not ok else "met" if g["n"] >= 3 else "not yet judged"
        if g["n"] < 3:
            verdict += f": {g['n']} of 3 seeds"
        out.append(f"{BUDGET_NAMES[budget]}: gap closed {mean:.2f} (goal ≥ 0.5), {g['below']} of {g['n']} seeds below "
                   f"round 0 (goal 0): **{verdict}**")
    s10, full = goals.get("s10"), goals.get("5")
    if s10:
        gap = float(np.mean(s10["stored_gap"]))
        out.append(f"10 % sparse, best − at its threshold {gap:.3f} (goal ≤ 0.02): **{'met' if gap <= 0.02 else 'missed'}**")
        if full:
            share = float(np.mean(s10["stored"])) / float(np.mean(full["stored"]))
            out.append(f"10 % sparse against complete picks of the same micrographs, F1 at the thresholds they store: "
                       f"{share:.2f} (goal ≥ 0.95): **{'met' if share >= 0.95 else 'missed'}**")
        else:
            out.append("10 % sparse against complete picks of the same micrographs: not measured (budget 5 not run)")
    return "Goals (issue #19): " + "; ".join(out) + "."


def plot(points: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(points), figsize=(5.5 * len(points), 4.2), squeeze=False)
    for ax, (data, pts) in zip(axes[0], points.items()):
        budgets = [b for b in BUDGET_NAMES if b in pts]
        budgets.sort(key=lambda b: pts[b]["n"])
        n = [pts[b]["n"] for b in budgets]
        ax.plot(n, [pts[b]["round0"] for b in budgets], "o--", label="round 0 (labels only)")
        ax.plot(n, [pts[b]["self"] for b in budgets], "o-", label="self-trained")
        tz = [(pts[b]["n"], pts[b]["topaz"]) for b in budgets if pts[b]["topaz"] is not None]
        if tz:
            ax.plot(*zip(*tz), "s:", label="Topaz 0.3.20, same picks")
        if pts.get("ceiling") is not None:
            ax.axhline(pts["ceiling"], color="k", lw=0.8, label="ceiling (all expert picks)")
        for b, x in zip(budgets, n):
            ax.annotate(b, (x, pts[b]["self"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("labeled particles")
        ax.set_ylabel("best F1 on test")
        ax.set_title(data)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def merge(root: Path, score_on: str = "test") -> None:
    results = [r for r in load(root) if r["score_on"] == score_on]
    if not results:
        raise SystemExit(f"{root}: no recorded {score_on} runs to merge; docs/benchmarks.md is left as it is")
    datas = sorted({r["data"] for r in results})
    parts, points = [], {}
    for data in datas:
        text, pts = table(results, data, score_on)
        parts.append(text)
        points[data] = pts
    if points:
        plot(points, PNG)
    runs = sorted({" ".join(a for a in r["argv"][1:] if a != "--again") for r in results})
    expected = sorted({(r["data"], r["budget"], r["expected_particles"]) for r in results if r.get("expected_particles")})
    told = ("Told the particles a micrograph holds (`selftrain.expected_particles`, the number Topaz gets as `-n`): "
            + ", ".join(f"{d} {b} ({n:g})" for d, b, n in expected) + ". ") if expected else ""
    body = "\n\n".join(parts) + (
        "\n\nEach arm was run by `python benchmarks/label_efficiency.py` with: " + "; ".join(f"`{a}`" for a in runs) + ". "
        f"Defaults: U-Net width 16, 300 steps of batch {batch_sizes(results, 8)} per round on each of 2 DDP workers, 3 rounds (round 0 + 2 "
        "teacher–student rounds), binning and patch edge from the particle diameter; the ceiling trains 900 steps once. " + told +
        "Seconds per round are wall time of the rounds after round 0, measured while other arms or the test suite "
        "often shared the 2 cores: upper bounds. –: no recorded run. "
        "\n\nBest F1: the best any threshold reaches on the scored micrographs (a diagnosis); F1 at its threshold: at the "
        "threshold the campaign stored (what a user gets). Self-trained: the campaign's last round. Gap closed: "
        "(self-trained − round 0) / (ceiling − round 0), best F1, per seed. Cells: mean ± sd (number of seeds). "
        f"![F1 against labeled particles](img/{PNG.name})")
    commits = sorted({r.get("commit", "unknown") for r in results})
    update_section("label-efficiency", "Label efficiency: self-training against round 0, the ceiling and Topaz", body, commits=commits,
                   machines=[r.get("machine") for r in results])
