"""Sparse picks: does the threshold a picker stores transfer, and which particle-count estimate serves it best?

For a ``cryopick train`` run on a seeded share of the expert picks (the subsample of
``benchmarks/label_efficiency.py``), this rebuilds the validation strips the run held back (the bottom
``train.val_fraction`` of each labeled micrograph), finds their candidate peaks at the stored peak distance, and
chooses a threshold by each rule from the strips' curve against the sparse picks, as training does. Each threshold
is then scored on the dev micrographs (the split's ``unlabeled`` ones, with their complete expert picks), against
the best threshold there. To see the rules' spread beyond one subsample, the strips' complete picks are
subsampled again ``--draws`` times at the run's share (the model and its peaks stay the same).

Rules (all rescore precision against an estimated particle count N, as
:func:`cryopick.evaluation.metrics.sparse_precision` does, except ``plain`` and ``complete``):

* ``plain``: the F1-best threshold against the sparse picks as they are (the unpicked particles count as false);
* ``z<z>``: N = :func:`cryopick.evaluation.metrics.estimated_count` with that ``z``: expert picks / the largest
  Wilson lower bound (z standard errors) of matched / picks over cut points with >= 10 matches; ``z0`` is the
  plain largest share (the rule before 2026-12-04); ``z2m<K>``: z = 2 over cut points with >= K matches;
  ``z2fb``: z = 2 over cut points with >= 10 matches, or >= 3 where none has 10 (the product's default);
* ``complete``: the F1-best threshold against the strips' complete picks (what a perfect count could give);
* ``<rule>_tol``: the lowest threshold whose F1 is within ``TUNE_TOLERANCE`` of the rule's best (what campaigns
  do with Tune's trials, since strips of training micrographs favour too high a threshold).

    python research/sparse_threshold.py RUN --complete-coords ../shared/data/empiar10017/coords \
        --dev ../shared/data/empiar10017/micrographs/Falcon_2012_06_12-15_27_22_0.mrc ...
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryopick.evaluation.metrics import CANDIDATE_FLOOR, PRCurve, best_threshold, estimated_count, pooled_curve, score_at


def count_of(curve: PRCurve, z: float, min_matched: int | None = 10) -> float:
    """The particle count :func:`estimated_count` gives along ``curve`` (0: not estimable)."""
    return estimated_count(np.arange(1, len(curve.tp) + 1), curve.tp, curve.recall, z, min_matched)


def rescored(curve: PRCurve, count: float) -> PRCurve:
    """``curve`` with precision against ``count`` particles (unchanged when count is 0)."""
    if count <= 0:
        return curve
    k = np.arange(1, len(curve.tp) + 1)
    return PRCurve(curve.thresholds, np.minimum(1.0, curve.recall * count / k), curve.recall, curve.tp, curve.n_true)


def threshold_for_count(curve: PRCurve, count: float, tolerance: float = 0.0) -> float:
    """F1-best threshold against ``count`` particles; with ``tolerance``, the lowest within it of the best F1."""
    c = rescored(curve, count)
    best, t = best_threshold(c)
    if tolerance <= 0:
        return t
    last_of_value = np.r_[c.thresholds[1:] != c.thresholds[:-1], True]
    near = last_of_value & (c.f1 >= best - tolerance)
    return float(c.thresholds[near].min())


RuleFn = Callable[[PRCurve], tuple[float, float]]


def by_count(z: float, min_matched: int | None = 10, tolerance: float = 0.0) -> RuleFn:
    """The rule rescoring against :func:`count_of` (``z``, ``min_matched``): curve -> (threshold, count)."""
    def rule(c: PRCurve) -> tuple[float, float]:
        count = count_of(c, z, min_matched)
        return threshold_for_count(c, count, tolerance), count
    return rule


def plain(tolerance: float = 0.0) -> RuleFn:
    def rule(c: PRCurve) -> tuple[float, float]:
        return threshold_for_count(c, 0.0, tolerance), 0.0
    return rule


def rules() -> dict[str, RuleFn]:
    """name -> curve -> (threshold, estimated count; 0 where none is estimated)."""
    from cryopick.selftrain.config import TUNE_TOLERANCE

    out = {"plain": plain(), "plain_tol": plain(TUNE_TOLERANCE)}
    out.update({f"z{z:g}": by_count(z) for z in (0.0, 1.0, 2.0, 3.0)})
    out.update({f"z2m{m}": by_count(2.0, m) for m in (3, 5)})
    out["z2fb"] = by_count(2.0, None)  # the product's default: >= 10 matches, else >= 3
    out["z2_tol"] = by_count(2.0, 10, TUNE_TOLERANCE)
    return out


def candidates(model: Any, meta: Any, lm: Any, rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate peaks (binned xy, scores) of one labeled micrograph at the stored peak distance, inside ``rows``."""
    from cryopick.evaluation.metrics import in_strip
    from cryopick.inference.border import outside_band
    from cryopick.inference.peaks import find_peaks
    from cryopick.inference.tiling import predict_heatmap

    b = lm.binned
    hm = predict_heatmap(model, b.image)
    ok = outside_band(b.image.shape, b.scale, b.original_shape, meta.border)
    xy, s = find_peaks(hm, meta.resolved_min_distance() / b.mean_scale, CANDIDATE_FLOOR, meta.smooth_sigma, allowed=ok)
    if rows is None:
        return xy, s
    keep = in_strip(xy, rows)
    return xy[keep], s[keep]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a cryopick train run directory (model.pt, config.json)")
    p.add_argument("--complete-coords", type=Path, required=True, help="the expert picks, complete")
    p.add_argument("--coords", type=Path, help="the sparse picks the run trained on (default: its config's, if absolute)")
    p.add_argument("--dev", nargs="+", required=True, help="dev micrographs (their complete picks are in --complete-coords)")
    p.add_argument("--draws", type=int, default=200, help="resubsamples of the strips' complete picks")
    p.add_argument("--out", type=Path, help="JSON of the results (default RUN/sparse_threshold.json)")
    args = p.parse_args()

    from cryopick.evaluation.metrics import in_strip
    from cryopick.inference.picker import load_picker
    from cryopick.training.dataset import hold_rows, load_labeled

    cfg = json.loads((args.run / "config.json").read_text())
    model, meta = load_picker(args.run)
    d, pre, frac = cfg["diameter"], meta.preprocess, cfg["train"]["val_fraction"]
    radius = d / 2.0
    strips = []  # (candidate xy orig, scores, sparse picks orig, complete picks orig)
    for m in cfg["micrographs"]:
        sparse = load_labeled(Path(m), args.coords or Path(cfg["coords"]), d, pre)
        full = load_labeled(Path(m), args.complete_coords, d, pre)
        rows = hold_rows(sparse.binned.image.shape[0], frac)
        xy, s = candidates(model, meta, sparse, rows)
        sc = sparse.binned.mean_scale
        strips.append((xy * sc, s, sparse.xy[in_strip(sparse.xy, rows)] * sc, full.xy[in_strip(full.xy, rows)] * sc))
    dev = []
    for m in args.dev:
        lm = load_labeled(Path(m), args.complete_coords, d, pre)
        xy, s = candidates(model, meta, lm)
        dev.append((xy * lm.binned.mean_scale, s, lm.xy * lm.binned.mean_scale))
    dev_curve = pooled_curve(dev, radius)
    dev_best = best_threshold(dev_curve)
    n_sparse, n_full = sum(len(t) for *_, t, _ in strips), sum(len(t) for *_, t in strips)
    share = n_sparse / max(n_full, 1)
    named = rules()
    t_full = best_threshold(pooled_curve([(xy, s, full) for xy, s, _, full in strips], radius))[1]  # same in every draw
    complete = {"threshold": t_full, "count": float(n_full), "dev_f1": score_at(dev_curve, t_full)[2], "share": share}

    def judge(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
        curve = pooled_curve(parts, radius)
        out = {}
        for name, rule in named.items():
            t, count = rule(curve)
            out[name] = {"threshold": t, "count": count, "dev_f1": score_at(dev_curve, t)[2],
                         "share": min(1.0, curve.n_true / count) if count > 0 else 1.0}
        out["complete"] = complete
        return out

    run_result = judge([(xy, s, sp) for xy, s, sp, _ in strips])
    rng = np.random.default_rng(0)
    draws: dict[str, list[float]] = {}
    for _ in range(args.draws):
        parts = [(xy, s, full[rng.random(len(full)) < share]) for xy, s, _, full in strips]
        for name, r in judge(parts).items():
            draws.setdefault(name, []).append(dev_best[0] - r["dev_f1"])
    result: dict[str, Any] = {"run": str(args.run), "strip_sparse_picks": n_sparse, "strip_complete_picks": n_full, "share": share,
              "stored_threshold": meta.threshold, "dev_best_f1": dev_best[0], "dev_best_threshold": dev_best[1],
              "dev_f1_at_stored": score_at(dev_curve, meta.threshold)[2], "rules": run_result,
              "draws": {k: {"gap_mean": float(np.mean(v)), "gap_sd": float(np.std(v)), "gap_p90": float(np.quantile(v, 0.9))}
                        for k, v in draws.items()}}
    (args.out or args.run / "sparse_threshold.json").write_text(json.dumps(result, indent=1))
    print(f"{args.run}: strip picks {n_sparse} of {n_full} (share {share:.3f}); dev best F1 {dev_best[0]:.3f} at "
          f"{dev_best[1]:.3f}; stored {meta.threshold:.3f} -> dev F1 {result['dev_f1_at_stored']:.3f}")
    print(f"{'rule':10s} {'thr':>6s} {'count':>7s} {'share':>6s} {'devF1':>6s} | draws: best - F1 mean ± sd (p90)")
    for name, r in run_result.items():
        dd = result["draws"][name]
        print(f"{name:10s} {r['threshold']:6.3f} {r['count']:7.0f} {r['share']:6.3f} {r['dev_f1']:6.3f} | "
              f"{dd['gap_mean']:.3f} ± {dd['gap_sd']:.3f} ({dd['gap_p90']:.3f})")


if __name__ == "__main__":
    main()
