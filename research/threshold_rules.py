"""Which stored threshold transfers to unseen micrographs? Tune's (or count-matched) against expected F1.

For cached campaign rounds (``benchmarks/out/al_new``, ``benchmarks/out/active_learning``,
``benchmarks/out/label_efficiency``) reads the round's own heatmaps (8-view, as the round predicted them),
and scores the dev ``unlabeled`` micrographs (choose here) and the ``test`` ones (report only) against the
expert picks at:

* ``stored``: the threshold in the round's ``metrics.json`` (Tune's on the validation strips, or count-matched);
* ``expected``: the threshold that maximises the F1 expected from the round's calibrated peak precision
  c(s) (its ``calibration.json`` table, fitted on its validation strips) over the candidate peaks of every
  non-test micrograph it predicted: E[F1](t) = 2 Σ_{s≥t} c / (n(t) + Σ c). No labels of the scored
  micrographs are read, and no density is assumed, so it also serves campaigns labeled in regions only;
* ``best``: the best threshold on those micrographs (what no rule can beat).

    python research/threshold_rules.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from label_efficiency import DATA  # noqa: E402 - the shared data root ($CRYOPICK_DATA_ROOT), as every benchmark reads it
CACHES = [REPO / "benchmarks" / "out" / c for c in ("al_new", "active_learning", "label_efficiency")]


def expected_f1_threshold(scores: np.ndarray, precision: np.ndarray) -> float:
    """Threshold maximising 2 Σ_{s≥t} c / (n(t) + Σ c) over candidate peaks ``scores`` with calibrated ``precision``."""
    order = np.argsort(-scores)
    s, c = scores[order], precision[order]
    tp, n = np.cumsum(c), np.arange(1, len(s) + 1)
    f1 = 2 * tp / (n + c.sum())
    return float(s[int(np.argmax(f1))]) if len(s) else 1.0


def main() -> None:
    from cryopick.evaluation.metrics import CANDIDATE_FLOOR, best_threshold, score_at
    from cryopick.io.coords import read_coords
    from cryopick.selftrain.pseudo import apply_calibration
    from cryopick.selftrain.scoring import load_heatmap, picks_of, pooled

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cache in CACHES:
        for rd in sorted(cache.glob("empiar100*/**/round_00[0-9]")):
            # dev-mode runs score other micrographs than `test`; the ceiling has no rounds to compare
            if "ceiling" in rd.parts or "dev" in rd.parts or not (rd / "calibration.json").exists() or not (rd / "metrics.json").exists():
                continue
            data = next(p for p in rd.parts if p.startswith("empiar100"))
            seed = next(p for p in rd.parts if p.startswith("seed"))
            # round 0 is one model per data set and seed, copied into every arm (and cache) that adopts it
            key = f"{data}/{seed}/round_000" if rd.name == "round_000" else str(rd)
            if key in seen:
                continue
            seen.add(key)
            split = json.loads((DATA / data / "split.json").read_text())
            m = json.loads((rd / "metrics.json").read_text())
            cal = json.loads((rd / "calibration.json").read_text())
            if not cal.get("peak"):
                continue
            diameter = float(json.loads((rd / "config.json").read_text())["diameter"])
            md = float(m["min_distance"])
            items = {}
            for npz in sorted((rd / "heatmaps").glob("*.npz")):
                xy, _ = read_coords(DATA / data / "coords" / f"{npz.stem}.csv")
                items[npz.stem] = load_heatmap(npz, xy)
            dev = [items[s] for s in split["unlabeled"] if s in items]
            test = [items[s] for s in split["test"] if s in items]
            pool = [sh for s, sh in items.items() if s not in split["test"]]
            if not dev or not test or not pool:
                continue
            cand = np.concatenate([picks_of(sh, CANDIDATE_FLOOR, md, 1.0)[1] for sh in pool])
            t_exp = expected_f1_threshold(cand, apply_calibration(cand, cal["peak"]))
            out: dict[str, Any] = {"round": str(rd.relative_to(REPO / "benchmarks" / "out")), "stored": float(m["threshold"]), "expected": t_exp,
                   "share": float(cal.get("picked_share", 1.0))}
            for name, group in (("dev", dev), ("test", test)):
                curve = pooled(group, CANDIDATE_FLOOR, md, 1.0, diameter)
                out[f"{name}_best"] = best_threshold(curve)[0]
                out[f"{name}_stored"] = score_at(curve, out["stored"])[2]
                out[f"{name}_expected"] = score_at(curve, t_exp)[2]
            rows.append(out)
            print(f"{out['round']:60s} share {out['share']:.2f} thr stored {out['stored']:.3f} expected {t_exp:.3f} | "
                  f"dev best {out['dev_best']:.3f} stored {out['dev_stored']:.3f} expected {out['dev_expected']:.3f} | "
                  f"test best {out['test_best']:.3f} stored {out['test_stored']:.3f} expected {out['test_expected']:.3f}",
                  flush=True)
    for data in ("empiar10017", "empiar10028"):
        sel = [r for r in rows if data in r["round"]]
        if not sel:
            continue
        for name in ("dev", "test"):
            gs = np.array([r[f"{name}_best"] - r[f"{name}_stored"] for r in sel])
            ge = np.array([r[f"{name}_best"] - r[f"{name}_expected"] for r in sel])
            better = int(np.sum(ge < gs - 1e-9))
            worse = int(np.sum(ge > gs + 1e-9))
            print(f"{data} {name}: {len(sel)} rounds; best − F1 at stored {gs.mean():.3f} ± {gs.std(ddof=1):.3f} (max {gs.max():.3f}), "
                  f"best − F1 at expected {ge.mean():.3f} ± {ge.std(ddof=1):.3f} (max {ge.max():.3f}); expected better in {better}, "
                  f"worse in {worse}")


if __name__ == "__main__":
    main()
