"""The self-training campaign on Ray: rounds of [pseudo-label -> train -> predict -> Tune -> score -> log].

Round 0 trains on the labeled micrographs. Round r >= 1 (``selftrain.method: teacher``) warm-starts
from round r-1's model and trains a student on labeled and unlabeled patches against an EMA teacher's
confident pixels, online in the DDP loop (:mod:`cryopick.training.teacher`); the teacher is the round's
model. With ``method: offline`` it instead predicts the unlabeled micrographs with round r-1's model,
turns the heatmaps into pseudo-labels (:mod:`cryopick.selftrain.pseudo`) and retrains on labeled +
pseudo-labeled patches. Every round then predicts the validation and test
micrographs, lets Ray Tune pick the threshold and peak distance on validation, scores the test set
and writes the round directory of docs/dev/contracts.md, ``metrics.json`` last.

This module only sequences the stages and does the Ray work (prediction actor pool, DDP training,
Tune); every decision in between is a plain function of :mod:`cryopick.selftrain.stages`. A rerun
resumes after the last complete round; inside an interrupted round, finished stages (pseudo heatmaps,
the trained model, predictions) are reused and an interrupted training run resumes from its last
Ray Train checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryopick.distributed.connect import cluster_has_gpus, ray_session
from cryopick.distributed.data import StageParams, build_train_dataset, training_rows, validation_specs
from cryopick.distributed.predict import predict_to_dir
from cryopick.distributed.tracking import CampaignTracker
from cryopick.distributed.train_loop import TrainSpec, fit, loop_config
from cryopick.distributed.tune import tune_picking
from cryopick.inference.picker import MODEL_FILE, PickerMeta, load_picker, save_picker
from cryopick.io.atomic import write_json
from cryopick.io.lock import OutputLock
from cryopick.io.manifest import output_dir
from cryopick.model.unet import build_unet
from cryopick.selftrain import stages
from cryopick.selftrain.config import TUNE_TOLERANCE, WARM_LR_SCALE, ResolvedData, SelftrainConfig, resolve_data
from cryopick.selftrain.outputs import write_tune_csv
from cryopick.selftrain.pseudo import PseudoLabeler
from cryopick.selftrain.reuse import adopt_picker, keep_previous
from cryopick.selftrain.scoring import at_picks, best_trial, judged_share, load_heatmap, picked_share, score_and_write, sparse_trials
from cryopick.selftrain.state import METRICS_FILE, CampaignState, campaign_stop, completed_rounds_on_disk, patch_counts, round_dir
from cryopick.selftrain.suggest import SUGGESTIONS_FILE, round_suggestions, suggestion_pool
from cryopick.training.loop import INTENSITY_AUGMENT, write_history
from cryopick.training.teacher import TeacherConfig

Hook = Callable[[int, str], None]


@dataclass
class CampaignResult:
    campaign_dir: Path
    tracking_uri: str
    rounds: list[dict[str, Any]] = field(default_factory=list)  # metrics.json of every complete round
    best_round: int | None = None
    stopped: str | None = None


def run_campaign(cfg: SelftrainConfig, *, progress: bool = True, hook: Hook | None = None,
                 log: Callable[[str], None] = print, verbose: bool = True) -> CampaignResult:
    """Run (or resume) a campaign; returns every complete round's metrics.

    ``verbose=False`` keeps Ray's, Tune's and the workers' own output off the terminal (a local Ray
    started here logs to its session directory instead), so a user sees ``log``'s lines alone.
    """
    data = resolve_data(cfg)  # every path checked, before anything is written
    with OutputLock(output_dir(cfg.campaign_dir)):  # one writer per campaign directory
        return _run_locked(cfg, data, progress, hook, log, verbose)


def _run_locked(cfg: SelftrainConfig, data: ResolvedData, progress: bool, hook: Hook | None, log: Callable[[str], None],
                verbose: bool) -> CampaignResult:
    campaign = stages.prepare_campaign(cfg, data)
    state = CampaignState.load(campaign)
    done = completed_rounds_on_disk(campaign)
    state.completed_rounds = [r for r in state.completed_rounds if r in done]  # state.json is written after metrics.json
    history = [json.loads((round_dir(campaign, r) / METRICS_FILE).read_text()) for r in done]
    for m in history:
        state.record(int(m["round"]), float(m["val_f1"]), float(m["f1"]))
    result = CampaignResult(campaign, cfg.tracking_uri(), history, state.best_round)
    reason = campaign_stop(history, cfg)
    new_labels = take_labels(data, campaign, state, len(history), log)
    if new_labels and reason is not None:
        if len(history) < cfg.selftrain.rounds:
            reason = None  # labels the campaign has not trained with yet: it goes on
        else:
            log(f"{len(new_labels)} newly labeled micrograph(s) wait for a round: rerun with --rounds {len(history) + 1}")
    if reason is not None:
        log(f"campaign {campaign} is complete ({reason}); nothing to do")
        result.stopped = reason
        return result
    if done:
        log(f"resuming campaign {campaign} after round {done[-1]}")
    if not verbose:  # their informational lines (store creation, each Dataset's plan) are for --verbose
        import mlflow  # noqa: F401 - both configure their loggers on import: quieten them after it
        import ray.data  # noqa: F401

        for name in ("mlflow", "ray.data", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.ERROR)
    with ray_session(cfg.ray.address, cfg.ray.num_cpus, quiet=not verbose):
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = progress
        tracker = CampaignTracker(result.tracking_uri, cfg.tracking.experiment, campaign, cfg.name or campaign.name)
        try:
            state.mlflow_parent_run_id = tracker.start(cfg.as_dict(), state.mlflow_parent_run_id)
            if state.labels:
                tracker.tag("labels", json.dumps(state.labels, sort_keys=True))
            state.tracking_uri, state.stopped = result.tracking_uri, None
            state.save(campaign)
            while reason is None:
                rnd = len(history)
                metrics = run_round(cfg, data, campaign, rnd, tracker, progress=progress, hook=hook, log=log,
                                    detail=log if verbose else None)
                history.append(metrics)
                state.record(rnd, metrics["val_f1"], metrics["f1"])
                state.stopped = reason = campaign_stop(history, cfg)
                state.save(campaign)
                log(f"round {rnd}: F1 {metrics['f1']:.4f} (precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}, "
                    f"AP {metrics['average_precision']:.3f}) on {metrics['scored_on']}; validation F1 {metrics['val_f1']:.4f} "
                    f"at threshold {metrics['threshold']:.2f}, min distance {metrics['min_distance']:.1f} px")
            tracker.finish("finished", {"best_round": state.best_round, "stopped": reason})
        except BaseException:
            tracker.finish("failed")
            raise
    result.best_round, result.stopped = state.best_round, reason
    return result


def take_labels(data: ResolvedData, campaign: Path, state: CampaignState, next_round: int,
                log: Callable[[str], None]) -> list[str]:
    """Move micrographs labeled in ``campaign/labels`` from unlabeled to labeled; return those new since the last run.

    ``state.labels`` records the first round that trains with each (state.json, and a tag on the MLflow campaign run).
    """
    labels, moved = data.take_campaign_labels(campaign)
    new = [m.stem for m in moved if m.stem not in state.labels]
    for stem in new:
        state.labels[stem] = next_round
    unknown = sorted(set(labels) - {m.stem for m in moved} - {m.stem for m in data.labeled})
    if unknown:
        log(f"labels/ holds picks of {len(unknown)} micrograph(s) that are not unlabeled micrographs of this campaign, "
            f"ignored: {', '.join(unknown[:5])}")
    if new:
        log(f"{len(new)} micrograph(s) labeled since the last round join the labeled set from round {next_round}: "
            f"{', '.join(new[:5])}{' ...' if len(new) > 5 else ''}")
    return new


@dataclass
class _Round:
    """One round being run: the campaign, where it writes, and how it predicts."""

    cfg: SelftrainConfig
    data: ResolvedData
    campaign: Path
    rnd: int
    use_gpu: bool
    progress: bool
    log: Callable[[str], None]
    detail: Callable[[str], None]  # lines for --verbose only
    timings: dict[str, float] = field(default_factory=lambda: {"time_predict_s": 0.0})

    @property
    def dir(self) -> Path:
        return round_dir(self.campaign, self.rnd)

    @property
    def prev(self) -> Path:
        return round_dir(self.campaign, self.rnd - 1)

    def predict(self, mics: list[Path], out: Path, model: Path, **kw: Any) -> list[dict[str, Any]]:
        """Heatmaps of ``mics`` into ``out`` with the prediction actor pool (timed)."""
        t0 = time.monotonic()
        c = self.cfg
        rows = list(predict_to_dir(mics, out, model, c.preprocess, c.predict, actors=c.ray.predict_actors, use_gpu=self.use_gpu,
                                   data_cpus=c.ray.data_cpus, pixel_size=c.data.pixel_size, progress=self.progress, **kw))
        self.timings["time_predict_s"] += time.monotonic() - t0
        return rows


def run_round(cfg: SelftrainConfig, data: ResolvedData, campaign: Path, rnd: int, tracker: CampaignTracker,
              *, progress: bool = True, hook: Hook | None = None, log: Callable[[str], None] = print,
              detail: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run round ``rnd`` to completion and return its metrics (also in round_XXX/metrics.json).

    ``log`` gets what a user must see; ``detail`` (None: nowhere) how the round's threshold was set.
    """
    hook = hook or (lambda r, s: None)
    t_start = time.monotonic()
    use_gpu = cfg.ray.use_gpu == "true" or (cfg.ray.use_gpu == "auto" and cluster_has_gpus())
    r = _Round(cfg, data, campaign, rnd, use_gpu, progress, log, detail or (lambda s: None))
    r.dir.mkdir(parents=True, exist_ok=True)
    offline = cfg.selftrain.method == "offline"
    labeler = stages.round_labeler(cfg, r.prev) if rnd >= 1 and data.unlabeled and offline else None
    pseudo = _pseudo_stage(r, labeler)
    if pseudo is not None:
        hook(rnd, "pseudo")
    _train_stage(r, pseudo, labeler)
    hook(rnd, "train")
    partial = {m: data.boxes[m.stem] for m in data.labeled if m.stem in data.boxes}  # their other regions stay open
    pool = suggestion_pool(data.unlabeled, list(partial), seed=rnd)
    val_items, test_items, count_items, pool_npz = _predict_stage(r, pool)
    hook(rnd, "predict")
    best, val_threshold = _tune_stage(r, val_items, count_items)
    hook(rnd, "tune")
    t0 = time.monotonic()
    scored, scored_on = (test_items, "test") if test_items else (val_items, "validation")
    score = score_and_write(r.dir, scored, best["threshold"], best["min_distance"], cfg.data.diameter, stages.SMOOTH_SIGMA)
    r.timings["time_score_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    round_suggestions(r.dir, pool_npz, cfg.data.diameter, seed=rnd, labeled=partial, strategy=cfg.selftrain.suggest)
    r.timings["time_suggest_s"] = time.monotonic() - t0
    r.timings["time_total_s"] = time.monotonic() - t_start
    train_result = _train_result(r.dir)
    metrics = stages.round_metrics(rnd, score, best, val_threshold, pseudo, train_result, r.timings)
    stop = {"stop": pseudo.stop} if pseudo and pseudo.stop else {}
    final = {**metrics, "scored_on": scored_on, "n_true": score.curve.n_true, "n_scored_micrographs": len(scored), **stop}
    tracker.log_round(rnd, {k: v for k, v in metrics.items() if k != "round"}, cfg.as_dict(), [
        ("model", r.dir / MODEL_FILE), ("picks", r.dir / "picks"), ("", r.dir / "pr_curve.csv"), ("", r.dir / "tune.csv"),
        ("preview", r.dir / "preview"), ("", r.dir / "pseudo_labels.json"), ("", r.dir / "history.csv"),
        ("", r.dir / SUGGESTIONS_FILE),
    ], documents={METRICS_FILE: final})
    write_json(r.dir / METRICS_FILE, final)  # last: its presence marks the round complete
    hook(rnd, "done")
    return {**metrics, "scored_on": scored_on, **stop}


def _pseudo_stage(r: _Round, labeler: PseudoLabeler | None = None) -> stages.PseudoOutcome | None:
    """Round >= 1: heatmaps of the unlabeled micrographs with the previous model -> pseudo-label coverage and verdict."""
    if labeler is None:
        return None
    stages.reuse_heatmaps(r.prev, r.dir, r.data.unlabeled)
    rows = r.predict(r.data.unlabeled, r.dir / "pseudo", r.prev / MODEL_FILE, pseudo=labeler, diameter=r.cfg.data.diameter)
    outcome = stages.judge_pseudo_labels(rows, labeler, r.data.unlabeled, r.prev, r.cfg, r.rnd)
    if outcome.note:
        r.log(f"round {r.rnd}: {outcome.note}")
    write_json(r.dir / "pseudo_labels.json", {**outcome.stats, "note": outcome.note} if outcome.note else outcome.stats)
    return outcome


def _train_stage(r: _Round, pseudo: stages.PseudoOutcome | None, labeler: PseudoLabeler | None) -> None:
    """The round's model: adopted (round 0 from ``round0_model``), kept (too few pseudo-labels) or trained."""
    t0 = time.monotonic()
    if not _trained(r.dir):
        shutil.rmtree(r.dir / "heatmaps", ignore_errors=True)  # predictions of an older model
        if r.rnd == 0 and r.cfg.selftrain.round0_model:
            border = stages.expert_border(r.data, r.cfg.data.diameter)
            for warning in adopt_picker(r.cfg.selftrain.round0_model, r.dir, r.cfg, border, stages.labels_digest(r.data)):
                r.log(f"round 0: {warning}")
        elif pseudo is not None and pseudo.stop:
            keep_previous(r.prev, r.dir, r.rnd, pseudo.stop, stages.labels_digest(r.data))
        else:
            _train(r, pseudo.pairs if pseudo else [], labeler)
    r.timings["time_train_s"] = time.monotonic() - t0


def _predict_stage(r: _Round, pool: list[Path]) -> tuple[list[Any], list[Any], list[Any], dict[Path, Path]]:
    """Heatmaps of the validation, test and count micrographs with this round's model, as scored items, and
    of the suggestion ``pool`` (micrograph -> .npz), in one pass with the spread of the views."""
    val_mics, count_mics, scored = stages.scored_micrographs(r.cfg, r.data)
    mics = list(dict.fromkeys([*scored, *pool]))
    rows = r.predict(mics, r.dir / "heatmaps", r.dir / MODEL_FILE, keep_image=True, keep_spread=True)
    npz = {row["name"]: Path(row["npz"]) for row in rows}
    _, meta = load_picker(r.dir, "cpu")
    band = meta.border  # scored as `cryopick pick` with this model would pick
    strips = not r.data.validation
    val = [stages.scored_item(m, npz[m.stem], r.data, band, strips, r.cfg.train.val_fraction, box)
           for m in val_mics for box in (r.data.boxes.get(m.stem, [None]) if strips else [None])]
    test = [stages.scored_item(m, npz[m.stem], r.data, band) for m in r.data.test]
    count = [load_heatmap(npz[m.stem], border=band) for m in count_mics]
    return val, test, count, {m: npz[m.stem] for m in pool}


def _tune_stage(r: _Round, val_items: list[Any], count_items: list[Any]) -> tuple[dict[str, float], float]:
    """Ray Tune over threshold x peak distance on validation; store the chosen setting with the model."""
    t0 = time.monotonic()
    c = r.cfg
    best, trials = tune_picking(
        val_items, c.data.diameter, c.tune.thresholds, c.tune.min_distance_fractions, smooth_sigma=stages.SMOOTH_SIGMA,
        cpu_per_trial=c.ray.data_cpus, storage_path=_storage(c, r.campaign), name=f"tune_round_{r.rnd:03d}_{os.getpid()}",
        tolerance=TUNE_TOLERANCE, quiet=not r.progress,
    )
    write_tune_csv(r.dir / "tune.csv", trials)
    chosen_from, few = stages.distance_trials(trials, val_items, c.data.diameter)
    if few:
        best = best_trial(chosen_from, TUNE_TOLERANCE)
        r.detail(f"round {r.rnd}: {few}")
    expected = stages.expected_share(c, r.data)  # the user's expected particles say what share is picked
    # region labels are complete inside their regions: nothing to judge (stages.sparse_labels)
    share = expected if expected is not None else 1.0 if r.data.regions_only else judged_share(
        trials, at_picks(val_items, c.data.diameter))
    sparse = stages.sparse_labels(c, r.campaign, r.data, share if r.rnd == 0 or expected is not None else None)
    if sparse:  # unpicked particles are not false picks: rescore the trials with the estimated particle count
        best = best_trial(sparse_trials(chosen_from), TUNE_TOLERANCE)
        if r.rnd == 0 and c.selftrain.labels == "auto":
            r.log(f"round 0: {stages.sparse_note(share, expected is not None)}")
    val_threshold = best["threshold"]

    def estimated_share() -> float:  # the count's share: matches where enough, else the share round 0 judged on
        bounded = picked_share(trials, default=None)
        fallback = bounded if bounded is not None else share if r.rnd == 0 else stages.judged_share_of_round0(r.campaign)
        return stages.sparse_share(val_items, best["min_distance"], c.data.diameter, fallback)

    # the user's share where given; estimated only if the count is used (not where the mixture sets the threshold)
    count_share: float | Callable[[], float] = 1.0 if not sparse else expected if expected is not None else estimated_share
    positive_unlabeled = bool(_train_result(r.dir).get("unpicked_prior"))
    best["threshold"], note = stages.choose_threshold(best, count_items, r.data, count_share, sparse=sparse,
                                                      mixture=not positive_unlabeled)
    if note:
        r.detail(f"round {r.rnd}: {note}")  # how the threshold was set: --verbose
    model, meta = load_picker(r.dir, "cpu")
    meta.threshold, meta.min_distance, meta.val_f1 = best["threshold"], best["min_distance"], best["f1"]
    save_picker(r.dir, model, meta)
    stages.write_calibration(r.dir, val_items, c, best, share)
    r.timings["time_tune_s"] = time.monotonic() - t0
    return best, val_threshold


def _train_result(rdir: Path) -> dict[str, Any]:
    """What the round's training recorded (config.json's ``result``)."""
    return dict(json.loads((rdir / "config.json").read_text())["result"])


def _storage(cfg: SelftrainConfig, campaign: Path) -> str:
    return str(Path(cfg.ray.storage_path).resolve()) if cfg.ray.storage_path else str(campaign / "ray_results")


def _trained(rdir: Path) -> bool:
    cfg_path = rdir / "config.json"
    return (rdir / MODEL_FILE).is_file() and cfg_path.is_file() and "result" in json.loads(cfg_path.read_text())


def _train(r: _Round, pseudo_pairs: list[tuple[Path, Path]], labeler: PseudoLabeler | None) -> None:
    """Distributed training of the round; writes model.pt, history.csv and config.json."""
    cfg, data = r.cfg, r.data
    hold = not data.validation and cfg.train.val_fraction > 0
    st = cfg.selftrain
    teacher = None
    if r.rnd >= 1 and st.method == "teacher":  # the campaign's pseudo-label rule, calibrated on round r-1's validation
        teacher = TeacherConfig(st.positive, st.negative, labeler=asdict(stages.round_labeler(cfg, r.prev)),
                                diameter=cfg.data.diameter, scale=stages.bin_of(cfg, data),
                                frozen_from=None if st.warm_start else str(r.prev / MODEL_FILE))
    unlabeled = data.unlabeled if teacher is not None else []
    patches = patch_counts(len(data.labeled), len(pseudo_pairs) + len(unlabeled), st.patches_per_epoch, st.labeled_fraction)
    # sparse picks: left to the teacher in rounds >= 1; in round 0 taught as positive-unlabeled where the user's
    # expected particles give the share of particles among the unpicked pixels, else (unknown yet) as background
    expected = stages.expected_share(cfg, data) if r.rnd == 0 and teacher is None else None
    sparse = (teacher is not None or expected is not None) and stages.sparse_labels(cfg, r.campaign, data, expected)
    prior = stages.unpicked_prior(data, cfg.data.diameter, expected) if sparse and expected is not None else 0.0
    params = StageParams(diameter=cfg.data.diameter, preprocess=asdict(cfg.preprocess), val_fraction=cfg.train.val_fraction,
                         pseudo=asdict(labeler or PseudoLabeler()), pixel_size=cfg.data.pixel_size,
                         sparse=sparse and (teacher is not None or prior > 0), prior=prior)
    rows = training_rows(data.labeled, data.coords_file, pseudo_pairs, *patches, hold, unlabeled)
    ds = build_train_dataset(rows, params, cfg.train.patch, cfg.ray.data_cpus, INTENSITY_AUGMENT)
    val = [asdict(v) for v in validation_specs(data.validation, data.labeled, data.coords_file, cfg.train.val_fraction, data.boxes)]
    init = str(r.prev / MODEL_FILE) if r.rnd >= 1 and cfg.selftrain.warm_start else None
    spec = TrainSpec(num_workers=cfg.ray.num_workers, use_gpu=r.use_gpu, cpu_per_worker=cfg.ray.cpu_per_worker,
                     max_failures=cfg.ray.max_failures, storage_path=_storage(cfg, r.campaign), name=f"{cfg.name or r.campaign.name}_round_{r.rnd:03d}")
    train = cfg.train
    floor = True
    if init is not None:  # fine-tune: restarting at the full rate first undoes what round r-1 learned
        train = dataclasses.replace(train, lr=train.lr * WARM_LR_SCALE)
    competes = init is not None or (teacher is not None and teacher.frozen_from is not None)  # round r-1's model, at step 0
    if competes:
        floor, why = stages.warm_start_floor(r.prev, data, params.sparse)
        if not floor:
            r.detail(f"round {r.rnd}: {why}: round {r.rnd - 1}'s model competes as an ordinary checkpoint, not as the floor")
    out = fit(ds, loop_config(train, cfg.model, params, val, init, stages.SMOOTH_SIGMA, teacher, floor), spec)
    model = build_unet(cfg.model)
    model.load_state_dict(out.best_state)
    meta = PickerMeta(diameter=cfg.data.diameter, preprocess=cfg.preprocess, model=cfg.model, smooth_sigma=stages.SMOOTH_SIGMA,
                      val_f1=out.best_val_f1 if out.best_val_f1 >= 0 else None, border=stages.expert_border(data, cfg.data.diameter))
    save_picker(r.dir, model, meta)
    write_history(r.dir / "history.csv", out.history)
    losses = [h["loss"] for h in out.history if np.isfinite(h.get("loss", np.nan))]
    result = {"best_step": out.best_step, "best_val_f1_in_training": out.best_val_f1, "train_seconds": out.seconds,
              "resumed_from_step": out.start_step, "final_loss": losses[-1] if losses else None,
              "method": "teacher" if teacher is not None else "supervised" if not pseudo_pairs else "offline",
              "sparse_labels": params.sparse, "unpicked_prior": prior if prior > 0 else None,
              "warm_start_floor": floor if competes else None}
    taught = [h for h in out.history if "teacher_positive" in h]
    if taught:  # what the teacher labeled over the last validation interval
        result.update(teacher_positive=taught[-1]["teacher_positive"], teacher_negative=taught[-1]["teacher_negative"])
    ray_info = {"num_workers": spec.num_workers, "use_gpu": r.use_gpu, "cpu_per_worker": spec.cpu_per_worker}
    write_json(r.dir / "config.json", stages.training_record(cfg, data, r.rnd, pseudo_pairs, train, init, patches, ray_info, result))
