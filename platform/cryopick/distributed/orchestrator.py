"""The self-training campaign: rounds of [pseudo-label -> train -> predict -> Tune -> score -> log].

Round 0 trains on the labeled micrographs. Round r >= 1 predicts the unlabeled micrographs with
round r-1's model, turns the heatmaps into pseudo-labels (calibrated on round r-1's validation
picks, see :mod:`cryopick.pseudo`), and retrains on labeled + pseudo-labeled patches (warm or
fresh start). Every round then predicts the validation and test micrographs, lets Ray Tune pick
the threshold and peak distance on validation, scores the test set and writes the round directory
of docs/dev/contracts.md, ``metrics.json`` last. A rerun resumes after the last complete round;
inside an interrupted round, finished stages (pseudo heatmaps, the trained model, predictions) are
reused and an interrupted training run resumes from its last Ray Train checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryopick import __version__
from cryopick.dataset import coords_for
from cryopick.distributed.data import StageParams, build_train_dataset, hold_rows, training_rows, validation_specs
from cryopick.distributed.predict import cluster_has_gpus, predict_to_dir
from cryopick.distributed.train_loop import TrainSpec, fit, loop_config
from cryopick.distributed.tracking import CampaignTracker
from cryopick.distributed.tune import tune_picking
from cryopick.errors import CryopickError
from cryopick.border import learn_border
from cryopick.io.atomic import atomic_write, write_json
from cryopick.io.coords import read_coords
from cryopick.io.micrograph import read_shape
from cryopick.labels import circle_mask
from cryopick.model import build_unet
from cryopick.picker import MODEL_FILE, PickerMeta, load_picker, save_picker
from cryopick.pseudo import PseudoLabeler, fit_calibration, no_particles_note
from cryopick.runtime import CPU_ENV
from cryopick.selftrain import ResolvedData, SelftrainConfig, resolve_data
from cryopick.selftrain_state import (
    CAMPAIGN_FILE, METRICS_FILE, CampaignState, campaign_stop, completed_rounds_on_disk, config_mismatch, patch_counts,
    round_dir, too_few_pseudo_particles,
)
from cryopick.selftrain_rounds import (
    ScoredHeatmap, adopt_picker, count_matched_threshold, keep_previous, load_heatmap, picks_per_true, pseudo_summary,
    score_and_write, write_tune_csv,
)

SMOOTH_SIGMA = 1.0  # binned px, as single-process training
CALIBRATION_FILE = "calibration.json"
Hook = Callable[[int, str], None]


@dataclass
class CampaignResult:
    campaign_dir: Path
    tracking_uri: str
    rounds: list[dict[str, Any]] = field(default_factory=list)  # metrics.json of every complete round
    best_round: int | None = None
    stopped: str | None = None


def expert_labels(data: ResolvedData) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """(expert picks, (H, W)) of each labeled micrograph (headers and coordinate files only)."""
    return [(read_coords(coords_for(Path(m), Path(data.coords)))[0], read_shape(m)) for m in data.labeled]


def expert_border(data: ResolvedData, diameter: float) -> float:
    """Edge band the labeled micrographs' expert picks leave empty."""
    return learn_border(expert_labels(data), diameter)


def expert_density(data: ResolvedData) -> float:
    """Expert picks per ORIGINAL px² over the labeled micrographs."""
    labels = expert_labels(data)
    return sum(len(xy) for xy, _ in labels) / max(1, sum(h * w for _, (h, w) in labels))


def connect(cfg: SelftrainConfig) -> bool:
    """Connect to Ray (configured address, $RAY_ADDRESS, or a new local one); True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)  # resources come from the cluster; passing num_cpus here raises
        return True
    ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=True, runtime_env={"env_vars": dict(CPU_ENV)})
    return True


def prepare_campaign(cfg: SelftrainConfig) -> tuple[ResolvedData, Path]:
    """Check every path, then write (or check) campaign.json; nothing touches Ray before this."""
    data = resolve_data(cfg)
    campaign = cfg.campaign_dir
    campaign.mkdir(parents=True, exist_ok=True)
    resolved = {**cfg.as_dict(), "cryopick_version": __version__,
                "resolved": {k: [str(p) for p in getattr(data, k)] for k in ("labeled", "unlabeled", "validation", "test")}}
    path = campaign / CAMPAIGN_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        stored.pop("cryopick_version", None)
        current = {k: v for k, v in resolved.items() if k != "cryopick_version"}
        bad = config_mismatch(stored, current)
        if bad is not None:
            raise CryopickError(f"config key {bad} differs from the campaign being resumed; use a new campaign directory", path)
    write_json(path, resolved)
    return data, campaign


def run_campaign(cfg: SelftrainConfig, *, progress: bool = True, hook: Hook | None = None,
                 log: Callable[[str], None] = print) -> CampaignResult:
    """Run (or resume) a campaign; returns every complete round's metrics."""
    data, campaign = prepare_campaign(cfg)
    state = CampaignState.load(campaign)
    done = completed_rounds_on_disk(campaign)
    for rnd in list(state.completed_rounds):
        if rnd not in done:  # state.json is written after metrics.json; trust the files
            state.completed_rounds.remove(rnd)
    history = [json.loads((round_dir(campaign, r) / METRICS_FILE).read_text()) for r in done]
    for m in history:
        state.record(int(m["round"]), float(m["val_f1"]), float(m["f1"]))
    uri = cfg.tracking_uri()
    result = CampaignResult(campaign, uri, history, state.best_round)
    reason = campaign_stop(history, cfg)
    if reason is not None:
        log(f"campaign {campaign} is complete ({reason}); nothing to do")
        result.stopped = reason
        return result
    if done:
        log(f"resuming campaign {campaign} after round {done[-1]}")
    started = connect(cfg)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = progress
    tracker = CampaignTracker(uri, cfg.tracking.experiment, campaign, cfg.name)
    try:
        state.mlflow_parent_run_id = tracker.start(cfg.as_dict(), state.mlflow_parent_run_id)
        state.tracking_uri = uri
        state.stopped = None
        state.save(campaign)
        rnd = len(done)
        while reason is None:
            metrics = run_round(cfg, data, campaign, rnd, tracker, progress=progress, hook=hook, log=log)
            history.append(metrics)
            state.record(rnd, metrics["val_f1"], metrics["f1"])
            reason = campaign_stop(history, cfg)
            state.stopped = reason
            state.save(campaign)
            log(f"round {rnd}: F1 {metrics['f1']:.4f} (precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}, "
                f"AP {metrics['average_precision']:.3f}) on {metrics['scored_on']}; validation F1 {metrics['val_f1']:.4f} "
                f"at threshold {metrics['threshold']:.2f}, min distance {metrics['min_distance']:.1f} px")
            rnd += 1
        tracker.finish("finished", {"best_round": state.best_round, "stopped": reason})
    except BaseException:
        tracker.finish("failed")
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    result.best_round, result.stopped = state.best_round, reason
    return result


def _use_gpu(cfg: SelftrainConfig) -> bool:
    return cfg.ray.use_gpu == "true" or (cfg.ray.use_gpu == "auto" and cluster_has_gpus())


def _stage_params(cfg: SelftrainConfig, labeler: PseudoLabeler | None) -> StageParams:
    return StageParams(
        diameter=cfg.data.diameter, preprocess=asdict(cfg.preprocess), label_radius_fraction=cfg.train.label_radius_fraction,
        val_fraction=cfg.train.val_fraction, pseudo=asdict(labeler or PseudoLabeler()), pixel_size=cfg.data.pixel_size,
    )


def round_labeler(cfg: SelftrainConfig, prev_dir: Path) -> PseudoLabeler:
    """The pseudo-labeler a round uses: the campaign's rules with the previous round's calibration tables."""
    cal = _calibration(prev_dir)
    return PseudoLabeler(positive=cfg.selftrain.positive, negative=cfg.selftrain.negative,
                         calibration=cal.get("pixel", []), peak_calibration=cal.get("peak", []),
                         calibrate=cfg.selftrain.calibrate, positive_disks=cfg.selftrain.positive_disks,
                         ignore_unsure_peaks=cfg.selftrain.ignore_unsure_peaks,
                         label_radius_fraction=cfg.train.label_radius_fraction,
                         min_distance_fraction=float(cal.get("min_distance", 0.6 * cfg.data.diameter)) / cfg.data.diameter,
                         balance_to=float(cal.get("positive_share", 0.0)) if cfg.selftrain.balance else 0.0)


def run_round(cfg: SelftrainConfig, data: ResolvedData, campaign: Path, rnd: int, tracker: CampaignTracker,
              *, progress: bool = True, hook: Hook | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run round ``rnd`` to completion and return its metrics (also in round_XXX/metrics.json)."""
    hook = hook or (lambda r, s: None)
    t_start = time.monotonic()
    rdir = round_dir(campaign, rnd)
    rdir.mkdir(parents=True, exist_ok=True)
    use_gpu = _use_gpu(cfg)
    common: dict[str, Any] = {"actors": cfg.ray.predict_actors, "use_gpu": use_gpu, "data_cpus": cfg.ray.data_cpus,
              "pixel_size": cfg.data.pixel_size, "progress": progress}
    timings = {"time_predict_s": 0.0}

    # 1. pseudo-labels from the previous round's model
    pseudo_pairs: list[tuple[Path, Path]] = []
    labeler: PseudoLabeler | None = None
    pstats = {"positive": 0.0, "negative": 0.0, "ignored": 0.0, "n_micrographs": 0}
    stop_note = ""  # set when pseudo-labels are too few to learn from (too_few_pseudo_particles)
    if rnd >= 1 and data.unlabeled:
        prev = round_dir(campaign, rnd - 1)
        labeler = round_labeler(cfg, prev)
        t0 = time.monotonic()
        for m in data.unlabeled:  # the ones the previous round already predicted for its threshold count
            done, target = prev / "heatmaps" / f"{m.stem}.npz", rdir / "pseudo" / f"{m.stem}.npz"
            if done.is_file() and not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(target) as tmp:
                    shutil.copyfile(done, tmp)
        rows = list(predict_to_dir(data.unlabeled, rdir / "pseudo", prev / MODEL_FILE, cfg.preprocess, cfg.pick,
                                   pseudo=labeler, diameter=cfg.data.diameter, **common))
        timings["time_predict_s"] += time.monotonic() - t0
        pstats = pseudo_summary(rows)
        expert_share = float(_calibration(prev).get("positive_share", 0.0))  # particle share of expert-labeled pixels
        if too_few_pseudo_particles(pstats["positive"], expert_share, cfg.selftrain.min_pseudo_share):
            note = stop_note = (
                f"pseudo-labels mark {pstats['positive']:.2%} of the unlabeled pixels as particle, under "
                f"selftrain.min_pseudo_share {cfg.selftrain.min_pseudo_share:g} x the expert labels' {expert_share:.2%}; "
                f"round {rnd} keeps round {rnd - 1}'s model (training on without pseudo-labeled particles only fits "
                "the labeled micrographs longer) and the campaign stops after it; for more pseudo-labels label more "
                "micrographs, train round 0 longer or lower selftrain.positive")
        else:
            note = no_particles_note(labeler) if pstats["positive"] == 0.0 else ""
        if note:
            log(f"round {rnd}: {note}")
        write_json(rdir / "pseudo_labels.json", {**pstats, "note": note} if note else pstats)
        by_name = {r["name"]: Path(r["npz"]) for r in rows}
        pseudo_pairs = [(m, by_name[m.stem]) for m in data.unlabeled]
        hook(rnd, "pseudo")

    # 2. distributed training (skipped when this round's model is already trained)
    t0 = time.monotonic()
    if not _trained(rdir):
        shutil.rmtree(rdir / "heatmaps", ignore_errors=True)  # predictions of an older model
        if rnd == 0 and cfg.selftrain.round0_model:
            for warning in adopt_picker(cfg.selftrain.round0_model, rdir, cfg, expert_border(data, cfg.data.diameter)):
                log(f"round 0: {warning}")
        elif stop_note:
            keep_previous(round_dir(campaign, rnd - 1), rdir, rnd, stop_note)
        else:
            _train(cfg, data, rdir, rnd, pseudo_pairs, labeler, use_gpu, campaign)
    timings["time_train_s"] = time.monotonic() - t0
    hook(rnd, "train")

    # 3. heatmaps of the validation and test micrographs
    val_mics = data.validation or (data.labeled if cfg.train.val_fraction > 0 else [])
    # strips of training micrographs bias the threshold; unlabeled micrographs correct it by counts
    count_mics = data.unlabeled[: cfg.tune.count_micrographs] if cfg.tune.count_matched and not data.validation else []
    scored = list(dict.fromkeys([*val_mics, *data.test, *count_mics]))
    t0 = time.monotonic()
    npz = {r["name"]: Path(r["npz"]) for r in predict_to_dir(scored, rdir / "heatmaps", rdir / MODEL_FILE, cfg.preprocess,
                                                                cfg.pick, keep_image=True, **common)}
    timings["time_predict_s"] += time.monotonic() - t0
    model, meta = load_picker(rdir, "cpu")
    band = meta.border  # scored as `cryopick pick` with this model would pick
    val_items = [_scored(m, npz[m.stem], data, band, held_back=not data.validation, val_fraction=cfg.train.val_fraction)
                 for m in val_mics]
    test_items = [_scored(m, npz[m.stem], data, band) for m in data.test]
    count_items = [load_heatmap(npz[m.stem], border=band) for m in count_mics]
    hook(rnd, "predict")

    # 4. Tune threshold x peak distance on validation
    t0 = time.monotonic()
    best, trials = tune_picking(
        val_items, cfg.data.diameter, cfg.tune.thresholds, cfg.tune.min_distance_fractions, smooth_sigma=SMOOTH_SIGMA,
        cpu_per_trial=cfg.tune.cpu_per_trial, storage_path=_storage(cfg, campaign), name=f"tune_round_{rnd:03d}_{os.getpid()}",
        tolerance=cfg.tune.tolerance,
    )
    write_tune_csv(rdir / "tune.csv", trials)
    val_threshold = best["threshold"]
    if count_items and val_items:
        per_true = picks_per_true(best)
        best["threshold"], k = count_matched_threshold(count_items, per_true, expert_density(data), best["min_distance"], SMOOTH_SIGMA)
        log(f"round {rnd}: threshold {best['threshold']:.3f}, the score of the {k}th best peak on {len(count_items)} unlabeled "
            f"micrograph(s) ({per_true:.2f} picks per expected particle, as {val_threshold:.2f} keeps on the validation strips)")
    meta.threshold, meta.min_distance, meta.val_f1 = best["threshold"], best["min_distance"], best["f1"]
    save_picker(rdir, model, meta)
    _write_calibration(rdir, val_items, cfg, best)
    timings["time_tune_s"] = time.monotonic() - t0
    hook(rnd, "tune")

    # 5. score on test (validation when there is no test set), write picks/previews/curves
    t0 = time.monotonic()
    scored_items, scored_on = (test_items, "test") if test_items else (val_items, "validation")
    score = score_and_write(rdir, scored_items, best["threshold"], best["min_distance"], cfg.data.diameter, SMOOTH_SIGMA)
    timings["time_score_s"] = time.monotonic() - t0
    timings["time_total_s"] = time.monotonic() - t_start
    history = json.loads((rdir / "config.json").read_text())["result"]
    metrics: dict[str, Any] = {
        "round": rnd, "precision": score.precision, "recall": score.recall, "f1": score.f1,
        "average_precision": score.average_precision, "threshold": best["threshold"], "val_threshold": val_threshold,
        "min_distance": best["min_distance"],
        "train_loss": history.get("final_loss"), "val_f1": best["f1"], "n_picks": score.n_picks,
        "pseudo_positive": pstats["positive"], "pseudo_negative": pstats["negative"], "pseudo_ignored": pstats["ignored"],
        **timings,
    }
    final = {**metrics, "scored_on": scored_on, "n_true": score.curve.n_true, "n_scored_micrographs": len(scored_items)}
    if stop_note:
        final["stop"] = stop_note
    tracker.log_round(rnd, {k: v for k, v in metrics.items() if k != "round"}, cfg.as_dict(), [
        ("model", rdir / MODEL_FILE), ("picks", rdir / "picks"), ("", rdir / "pr_curve.csv"), ("", rdir / "tune.csv"),
        ("preview", rdir / "preview"), ("", rdir / "pseudo_labels.json"), ("", rdir / "history.csv"),
    ], documents={METRICS_FILE: final})
    write_json(rdir / METRICS_FILE, final)  # last: its presence marks the round complete
    hook(rnd, "done")
    return {**metrics, "scored_on": scored_on, **({"stop": stop_note} if stop_note else {})}


def _calibration(rdir: Path) -> dict[str, Any]:
    """A round's calibration.json (written by _write_calibration), or {} before it exists."""
    path = rdir / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _storage(cfg: SelftrainConfig, campaign: Path) -> str:
    return str(Path(cfg.ray.storage_path).resolve()) if cfg.ray.storage_path else str(campaign / "ray_results")


def _trained(rdir: Path) -> bool:
    cfg_path = rdir / "config.json"
    return (rdir / MODEL_FILE).is_file() and cfg_path.is_file() and "result" in json.loads(cfg_path.read_text())


def _train(cfg: SelftrainConfig, data: ResolvedData, rdir: Path, rnd: int, pseudo_pairs: list[tuple[Path, Path]],
           labeler: PseudoLabeler | None, use_gpu: bool, campaign: Path) -> None:
    """Distributed training of round ``rnd``; writes model.pt, history.csv and config.json."""
    from cryopick.train import _write_history

    hold = not data.validation and cfg.train.val_fraction > 0
    n_lab, n_ps = patch_counts(len(data.labeled), len(pseudo_pairs), cfg.selftrain.patches_per_epoch, cfg.selftrain.labeled_fraction)
    rows = training_rows(data.labeled, data.coords, pseudo_pairs, n_lab, n_ps, hold)
    params = _stage_params(cfg, labeler)
    ds = build_train_dataset(rows, params, cfg.train.patch_size, cfg.ray.data_cpus, cfg.train.intensity_augment)
    val = [asdict(v) for v in validation_specs(data.validation, data.labeled, data.coords, cfg.train.val_fraction)]
    prev = round_dir(campaign, rnd - 1) / MODEL_FILE
    init = str(prev) if rnd >= 1 and cfg.selftrain.warm_start else None
    spec = TrainSpec(num_workers=cfg.ray.num_workers, use_gpu=use_gpu, cpu_per_worker=cfg.ray.cpu_per_worker,
                     max_failures=cfg.ray.max_failures, storage_path=_storage(cfg, campaign), name=f"{cfg.name}_round_{rnd:03d}")
    train = cfg.train
    if init is not None:  # fine-tune: restarting at the full rate first undoes what round r-1 learned
        train = dataclasses.replace(train, lr=train.lr * cfg.selftrain.warm_lr_scale)
    out = fit(ds, loop_config(train, cfg.model, params, val, init, SMOOTH_SIGMA), spec)
    model = build_unet(cfg.model)
    model.load_state_dict(out.best_state)
    meta = PickerMeta(diameter=cfg.data.diameter, preprocess=cfg.preprocess, model=cfg.model, smooth_sigma=SMOOTH_SIGMA,
                      val_f1=out.best_val_f1 if out.best_val_f1 >= 0 else None, border=expert_border(data, cfg.data.diameter))
    save_picker(rdir, model, meta)
    _write_history(rdir / "history.csv", out.history)
    losses = [h["loss"] for h in out.history if np.isfinite(h.get("loss", np.nan))]
    write_json(rdir / "config.json", {
        "cryopick_version": __version__, "command": "selftrain", "round": rnd, "diameter": cfg.data.diameter,
        "labeled": [str(m) for m in data.labeled], "validation": [str(m) for m in data.validation],
        "pseudo_labeled": [str(m) for m, _ in pseudo_pairs],
        "coords": str(data.coords), "preprocess": asdict(cfg.preprocess), "model": asdict(cfg.model),
        "train": asdict(train), "warm_start_from": init, "patches_per_micrograph": {"labeled": n_lab, "pseudo": n_ps},
        "ray": {"num_workers": spec.num_workers, "use_gpu": use_gpu, "cpu_per_worker": spec.cpu_per_worker},
        "result": {"best_step": out.best_step, "best_val_f1_in_training": out.best_val_f1, "train_seconds": out.seconds,
                   "resumed_from_step": out.start_step, "final_loss": losses[-1] if losses else None},
    })


def _scored(mic: Path, npz: Path, data: ResolvedData, border: float, held_back: bool = False,
            val_fraction: float = 0.0) -> ScoredHeatmap:
    true_xy, _ = read_coords(coords_for(mic, data.coords))
    sh = load_heatmap(npz, true_xy, border=border)
    sh.name = mic.stem
    if held_back:
        sh.rows = hold_rows(sh.heatmap.shape[0], val_fraction)
    return sh


def _write_calibration(rdir: Path, val_items: list[ScoredHeatmap], cfg: SelftrainConfig, best: dict[str, float]) -> None:
    """Fit the next round's pseudo-label calibration on this round's validation heatmaps."""
    from cryopick.pseudo import fit_peak_calibration

    heatmaps, masks = [], []
    for sh in val_items:
        r = max(1.0, cfg.train.label_radius_fraction * cfg.data.diameter / 2.0 / sh.mean_scale)
        xy = sh.true_xy / np.array([sh.scale[1], sh.scale[0]])
        mask = circle_mask(sh.heatmap.shape, xy, r)
        mask[: sh.rows[0]] = -1
        mask[sh.rows[1]:] = -1
        heatmaps.append(sh.heatmap)
        masks.append(mask)
    pixel = fit_calibration(heatmaps, masks)
    peak = fit_peak_calibration(val_items, best["min_distance"], cfg.data.diameter, SMOOTH_SIGMA)
    labeled = np.concatenate([m[m >= 0] for m in masks]) if masks else np.zeros(0)
    share = float((labeled == 1).mean()) if labeled.size else 0.0  # particle share of expert-labeled pixels
    write_json(rdir / CALIBRATION_FILE, {"pixel": pixel, "peak": peak, "min_distance": best["min_distance"], "positive_share": share})
