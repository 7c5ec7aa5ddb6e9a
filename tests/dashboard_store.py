"""Campaign stores for the dashboard tests.

:func:`real_campaign` runs a real, tiny self-training campaign (the Ray orchestrator, 2 rounds on
the simulated set): the page and browser tests read what it logged. :func:`write_contract_campaign`
writes the layout of ``docs/dev/contracts.md`` directly with ``MlflowClient``, with known numbers,
for the data-layer tests (exact coverage shares, timings, Tune grids) in milliseconds. Previews use
the simulated micrographs and their true centres, with a synthetic heatmap and picks near them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@dataclass
class WrittenCampaign:
    """What the helper logged, for the tests to compare the dashboard against."""

    tracking_uri: str
    campaign_dir: Path
    run_id: str
    name: str
    rounds: dict[int, dict[str, float]] = field(default_factory=dict)
    stems: list[str] = field(default_factory=list)


def _preview(
    image: np.ndarray, truth: np.ndarray, rng: np.random.Generator, quality: float, binning: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Binned image, heatmap with a blob on each detected particle, picks (original px) and scores."""
    from scipy import ndimage

    h, w = image.shape
    binned = image[: h // binning * binning, : w // binning * binning].reshape(h // binning, binning, w // binning, binning).mean((1, 3))
    found = rng.random(len(truth)) < quality
    false_xy = rng.uniform(0, [w, h], size=(int(len(truth) * (1 - quality) * 0.5) + 1, 2))
    picks = np.vstack([truth[found] + rng.normal(0, 1.5, (int(found.sum()), 2)), false_xy])
    scores = np.r_[rng.uniform(0.5, 1.0, int(found.sum())), rng.uniform(0.05, 0.6, len(false_xy))]
    heat = np.zeros(binned.shape, np.float32)
    for (x, y), s in zip(picks / binning, scores, strict=True):
        heat[min(int(y), heat.shape[0] - 1), min(int(x), heat.shape[1] - 1)] = s
    heat = ndimage.gaussian_filter(heat, 3.0)
    heat = heat / max(float(heat.max()), 1e-6)
    return binned.astype(np.float16), heat.astype(np.float16), picks, scores


def write_contract_campaign(
    root: Path,
    sim: Path,
    name: str = "sim-campaign",
    f1: tuple[float, ...] = (0.612, 0.705, 0.748),
    status: str = "finished",
    extra_round_without_metrics: bool = False,
) -> WrittenCampaign:
    """Write ``root/<name>/`` with its ``mlflow.db`` (one round per entry of ``f1``)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from cryopick.io.coords import read_coords
    from cryopick.io.micrograph import read_micrograph
    from cryopick.selftrain.acquisition import rank, region_boxes, score_views
    from cryopick.selftrain.suggest import write_suggestions

    cdir = (root / name).resolve()
    cdir.mkdir(parents=True)
    uri = f"sqlite:///{cdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cryopick", artifact_location=str(cdir / "mlartifacts"))
    config = {"name": name, "rounds": len(f1), "data": str(sim), "train": {"epochs": 2, "lr": 1e-3}}
    (cdir / "campaign.json").write_text(json.dumps(config))
    parent = client.create_run(exp, run_name=name, tags={
        "cryopick.kind": "campaign", "cryopick.campaign_dir": str(cdir), "cryopick.status": "running"})
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param("rounds", str(len(f1))), Param("train.epochs", "2"), Param("train.lr", "0.001")])
    split = json.loads((sim / "split.json").read_text())
    stems = split["test"] + split["labeled"][:1]
    out = WrittenCampaign(uri, cdir, pid, name, stems=stems)
    rng = np.random.default_rng(7)
    now = 1_700_000_000_000
    for rnd, f in enumerate(f1):
        rdir = cdir / f"round_{rnd:03d}"
        (rdir / "preview").mkdir(parents=True)
        p, r = min(1.0, f + 0.04), f - 0.035
        thr = 0.42 + 0.03 * rnd
        metrics = {"precision": p, "recall": r, "f1": f, "average_precision": f - 0.02, "threshold": thr,
                   "min_distance": 18.0, "train_loss": 0.3 / (rnd + 1), "val_f1": f - 0.01, "n_picks": 150.0 + 10 * rnd,
                   "time_train_s": 12.5 + rnd, "time_predict_s": 3.25, "time_tune_s": 4.0, "time_score_s": 1.5}
        metrics["time_total_s"] = sum(v for k, v in metrics.items() if k.startswith("time_")) + 0.75
        if rnd >= 1:  # count-matched picking threshold; Tune chose val_threshold (round 0: as campaigns before it)
            metrics.update(val_threshold=thr, threshold=thr - 0.05)
        if rnd >= 1:
            cov = {"positive": 0.06 + 0.01 * rnd, "negative": 0.70, "ignored": 0.24 - 0.01 * rnd}
            metrics.update({f"pseudo_{k}": v for k, v in cov.items()})
            (rdir / "pseudo_labels.json").write_text(json.dumps({**cov, "n_micrographs": 2}))
        thresholds = np.linspace(0.02, 0.98, 25)
        pr = pd.DataFrame({"threshold": thresholds, "precision": np.clip(0.45 + 0.5 * thresholds + 0.05 * rnd, 0, 1),
                           "recall": np.clip(1.0 - thresholds ** 1.5 - 0.02 * (2 - rnd), 0, 1)})
        pr.to_csv(rdir / "pr_curve.csv", index=False)
        grid = [(t, d) for t in (thr - 0.1, thr, thr + 0.1) for d in (12.0, 18.0)]
        tune = pd.DataFrame([{"threshold": t, "min_distance": d, "f1": f - abs(t - thr) - 0.01 * (d != 18.0),
                              "precision": p, "recall": r} for t, d in grid])
        tune.to_csv(rdir / "tune.csv", index=False)
        candidates = []
        for stem in stems:
            img = read_micrograph(sim / "micrographs" / f"{stem}.mrc").data
            truth, _ = read_coords(sim / "coords" / f"{stem}.star")
            im, heat, picks, scores = _preview(img, truth, rng, quality=f)
            np.savez(rdir / "preview" / f"{stem}.npz", image=im, heatmap=heat, scale=np.array([2.0, 2.0]),
                     picks_xy=picks, picks_score=scores, truth_xy=truth)
            candidates += [score_views(heat[None].astype(np.float32), (2.0, 2.0), stem, thr, 6.0, box=b)
                           for b in region_boxes(img.shape, 128)]
        write_suggestions(rdir / "suggestions.csv", rank(candidates, 5))
        (rdir / "metrics.json").write_text(json.dumps({"round": rnd, **metrics}))
        run = client.create_run(exp, run_name=f"round_{rnd:03d}", start_time=now + rnd * 1000, tags={
            "cryopick.kind": "round", "cryopick.round": str(rnd), "mlflow.parentRunId": pid})
        rid = run.info.run_id
        client.log_batch(rid, metrics=[Metric(k, float(v), now + rnd, rnd) for k, v in metrics.items()])
        client.log_batch(pid, metrics=[Metric(k, float(metrics[k]), now + rnd, rnd) for k in ("precision", "recall", "f1")])
        for fname in ("pr_curve.csv", "tune.csv", "metrics.json", "suggestions.csv"):
            client.log_artifact(rid, str(rdir / fname))
        client.log_artifacts(rid, str(rdir / "preview"), "preview")
        client.set_terminated(rid, "FINISHED")
        out.rounds[rnd] = metrics
    if extra_round_without_metrics:
        client.create_run(exp, run_name=f"round_{len(f1):03d}", tags={
            "cryopick.kind": "round", "cryopick.round": str(len(f1)), "mlflow.parentRunId": pid})
    client.set_tag(pid, "cryopick.status", status)
    if status != "running":
        client.set_terminated(pid, "FINISHED" if status == "finished" else "FAILED")
    (cdir / "state.json").write_text(json.dumps({"completed_rounds": list(range(len(f1))),
                                                 "best_round": int(np.argmax(f1)), "mlflow_parent_run_id": pid,
                                                 "tracking_uri": uri}))
    return out


_CACHE: dict[str, object] = {}  # session-wide: the fixtures of several modules share these


def shared_campaign(sim: Path, tmp_path_factory: pytest.TempPathFactory) -> WrittenCampaign:
    """The session's campaign store, written once and shared by every dashboard test module."""
    if "campaign" not in _CACHE:
        _CACHE["campaign"] = write_contract_campaign(tmp_path_factory.mktemp("dash_campaigns"), sim)
    return _CACHE["campaign"]  # type: ignore[return-value]


def empty_store(tmp_path_factory: pytest.TempPathFactory, dest: Path) -> str:
    """A fresh, empty ``mlflow.db`` at ``dest``: a copy of a template, since creating one takes ~6 s."""
    import shutil

    from mlflow import MlflowClient

    if "empty" not in _CACHE:
        template = tmp_path_factory.mktemp("dash_empty") / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _CACHE["empty"] = template
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(_CACHE["empty"], dest)  # type: ignore[arg-type]
    return f"sqlite:///{dest.resolve()}"


def real_campaign(sim: Path, tmp_path_factory: pytest.TempPathFactory) -> WrittenCampaign:
    """A real 2-round self-training campaign on the simulated set (Ray must be up: ``ray_session``).

    Tiny settings (1 Ray Train worker, 10 steps, 3 Tune trials per round): the point is a store the
    orchestrator wrote, not a good picker. Its numbers come from each round's ``metrics.json``.
    """
    if "real" not in _CACHE:
        from cryopick.distributed.orchestrator import run_campaign
        from cryopick.selftrain.config import load_config

        split = json.loads((sim / "split.json").read_text())
        mics = lambda names: [str(sim / "micrographs" / f"{n}.mrc") for n in names]  # noqa: E731
        out = tmp_path_factory.mktemp("dash_real") / "tiny"
        cfg = load_config(None, {
            "out": str(out), "data.labeled": mics(split["labeled"]), "data.unlabeled": mics(split["unlabeled"]),
            "data.test": mics(split["test"]), "data.coords": str(sim / "coords"), "data.diameter": 24.0,
            "model.base_width": 4, "train.steps": 10, "train.batch_size": 4, "train.patch_size": 64,
            "train.val_every": 10, "selftrain.rounds": 2, "selftrain.patience": 5, "selftrain.patches_per_epoch": 32,
            "selftrain.min_pseudo_share": 0.0,  # a 10-step width-4 model pseudo-labels little; round 1 still trains
            "tune.thresholds": [0.3, 0.5, 0.7], "tune.min_distance_fractions": [0.75],
            "ray.num_workers": 1, "ray.use_gpu": "false",
        })
        result = run_campaign(cfg, progress=False, log=lambda _msg: None)
        state = json.loads((result.campaign_dir / "state.json").read_text())
        written = WrittenCampaign(result.tracking_uri, result.campaign_dir, state["mlflow_parent_run_id"], cfg.name)
        for m in result.rounds:
            written.rounds[int(m["round"])] = {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}
        last = result.campaign_dir / f"round_{max(written.rounds):03d}" / "preview"
        written.stems = sorted(p.stem for p in last.glob("*.npz"))
        _CACHE["real"] = written
    return _CACHE["real"]  # type: ignore[return-value]
