"""Ray Tune: the picking threshold and minimum peak distance that maximise F1 on validation picks.

A grid over ``threshold x min_distance`` (distances as fractions of the particle diameter); each
trial finds peaks on the validation heatmaps and scores them with the plain
:mod:`cryopick.metrics` F1 (:func:`cryopick.selftrain_rounds.score_picks`). The heatmaps are put
in the object store once (``tune.with_parameters``), not copied into every trial's config.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from cryopick.selftrain_rounds import ScoredHeatmap, best_trial, score_picks


def _trial(config: dict[str, Any], items: Sequence[ScoredHeatmap], diameter: float, smooth_sigma: float) -> None:
    """One Tune trial: score the validation picks at ``config``'s setting and report."""
    from ray import tune

    md = float(config["min_distance_fraction"]) * diameter
    s = score_picks(items, float(config["threshold"]), md, diameter, smooth_sigma)
    tune.report({**s, "threshold": float(config["threshold"]), "min_distance": md})


def tune_picking(
    items: Sequence[ScoredHeatmap],
    diameter: float,
    thresholds: Sequence[float],
    min_distance_fractions: Sequence[float],
    *,
    smooth_sigma: float = 1.0,
    cpu_per_trial: float = 0.5,
    storage_path: str | None = None,
    name: str | None = None,
    tolerance: float = 0.0,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Grid-search threshold x peak distance with Ray Tune.

    Returns:
        best: the winning trial (threshold, min_distance in original px, f1, precision, recall),
            see :func:`cryopick.selftrain_rounds.best_trial` for ties and ``tolerance``.
        trials: every trial's row, in grid order.
    """
    from ray import tune

    if not items:
        raise ValueError("Tune needs validation heatmaps")
    trainable = tune.with_resources(
        tune.with_parameters(_trial, items=list(items), diameter=diameter, smooth_sigma=smooth_sigma),
        {"cpu": cpu_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={
            "threshold": tune.grid_search([float(t) for t in thresholds]),
            "min_distance_fraction": tune.grid_search([float(f) for f in min_distance_fractions]),
        },
        tune_config=tune.TuneConfig(metric="f1", mode="max", reuse_actors=True),
        run_config=tune.RunConfig(
            name=name or f"tune-{uuid.uuid4().hex[:8]}", storage_path=storage_path, verbose=0,
        ),
    )
    grid = tuner.fit()
    trials = []
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"a Tune trial failed: {result.error}")
        m = result.metrics
        trials.append({k: float(m[k]) for k in ("threshold", "min_distance", "f1", "precision", "recall")})
    trials.sort(key=lambda t: (t["min_distance"], t["threshold"]))
    return best_trial(trials, tolerance), trials
