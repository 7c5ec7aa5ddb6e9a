"""Ray Tune: the picking threshold and minimum peak distance that maximise F1 on validation picks.

A grid over ``threshold x min_distance`` (distances as fractions of the particle diameter); each
trial finds peaks on the validation heatmaps and scores them with the plain
:mod:`cryopick.evaluation.metrics` F1 (:func:`cryopick.selftrain.scoring.score_picks`). The heatmaps are put
in the object store once (``tune.with_parameters``), not copied into every trial's config.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryopick.selftrain.scoring import ScoredHeatmap, best_trial, score_picks


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
    quiet: bool = False,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Grid-search threshold x peak distance with Ray Tune (``quiet``: without Tune's tables on the terminal).

    Returns:
        best: the winning trial (threshold, min_distance in original px, f1, precision, recall),
            see :func:`cryopick.selftrain.scoring.best_trial` for ties and ``tolerance``.
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
    with _silenced(quiet):
        grid = tuner.fit()
    trials = []
    for result in grid:  # type: ignore[attr-defined]  # iterable through __getitem__; the stubs miss it
        if result.error is not None:
            raise RuntimeError(f"a Tune trial failed: {result.error}")
        m = result.metrics
        trials.append({k: float(m[k]) for k in ("threshold", "min_distance", "f1", "precision", "recall", "n_picks", "n_matched")})
    trials.sort(key=lambda t: (t["min_distance"], t["threshold"]))
    return best_trial(trials, tolerance), trials


@contextlib.contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """Tune prints its search table and result tables on the driver whatever ``verbose`` says: hide them when quiet."""
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def tune_model(
    model_path: Path,
    micrographs: Sequence[Path],
    truth: dict[str, Any],
    out_dir: Path,
    thresholds: Sequence[float],
    min_distance_fractions: Sequence[float],
    *,
    actors: int = 0,
    cpu_per_trial: float = 0.5,
    tolerance: float = 0.0,
    progress: bool = True,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Predict labeled validation ``micrographs`` with a trained picker, then grid-search its picking.

    Args:
        model_path: a ``model.pt`` (or its run directory).
        truth: micrograph stem -> (M, 2) expert picks, ORIGINAL px.
        out_dir: receives ``heatmaps/<stem>.npz`` and Tune's results in ``ray_results``.
    """
    from cryopick.config import PickConfig
    from cryopick.distributed.connect import cluster_has_gpus
    from cryopick.distributed.predict import predict_to_dir
    from cryopick.inference.picker import MODEL_FILE, load_picker
    from cryopick.selftrain.scoring import load_heatmap

    model_file = model_path / MODEL_FILE if model_path.is_dir() else model_path
    _, meta = load_picker(model_file, "cpu")
    rows = predict_to_dir(micrographs, out_dir / "heatmaps", model_file, meta.preprocess, PickConfig(), actors=actors,
                          use_gpu=cluster_has_gpus(), progress=progress, skip_existing=False)
    items = [load_heatmap(r["npz"], truth[r["name"]], border=meta.border) for r in rows]
    return tune_picking(items, meta.diameter, thresholds, min_distance_fractions, smooth_sigma=meta.smooth_sigma,
                        cpu_per_trial=cpu_per_trial, storage_path=str((out_dir / "ray_results").resolve()), tolerance=tolerance)
