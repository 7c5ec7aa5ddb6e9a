"""Ray Train: DDP training of the U-Net on a streamed patch Dataset, with fault-tolerant checkpoints.

Each worker reads its shard with ``ray.train.get_dataset_shard("train")`` and runs the same
:func:`cryopick.training.loop.train_step` as single-process training (``lr_at`` schedule, masked BCE);
``ray.train.torch.prepare_model`` wraps the model in DDP (gloo on CPU, nccl on GPU); ``train.amp`` (default: where
the hardware runs bfloat16 natively) autocasts the forward pass as there, and the teacher's. Every
``val_every`` steps rank 0 scores the validation picks and all ranks call ``ray.train.report``;
rank 0 attaches a checkpoint holding the current weights, optimizer, step and the best weights so
far. After a worker dies, ``FailureConfig(max_failures)`` restarts the group and the loop resumes
from ``ray.train.get_checkpoint()``, the last checkpoint.

A self-training round with a teacher (``selftrain.method: teacher``) keeps an EMA copy of the model on
every worker: each batch's ignored pixels (patches of unlabeled micrographs, unpicked areas of sparse
labels) get the teacher's labels before the step, the student sees their strong view, the teacher follows
the student after it (:mod:`cryopick.training.teacher`), and the teacher is validated, checkpointed and kept.
A fresh round (``selftrain.warm_start: false``) holds the previous round's model fixed as the teacher instead,
trains a student from random weights and validates and keeps the student.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cryopick.config import ModelConfig, TrainConfig, from_dict
from cryopick.distributed.data import StageParams, load_val_items
from cryopick.model.unet import build_unet
from cryopick.runtime import CPU_ENV, resolve_amp
from cryopick.selftrain.pseudo import PseudoLabeler
from cryopick.training.checkpoint import CheckpointRule
from cryopick.preprocessing.labels import IGNORE
from cryopick.training.loop import WEIGHT_DECAY, ValResult, evaluate, lr_at, train_step
from cryopick.training.teacher import TeacherConfig, ema_update, make_teacher, strong_view, teacher_targets

STATE_FILE = "train_state.pt"
SHUFFLE_BUFFER_BATCHES = 8  # local shuffle mixes patches of several micrographs in a batch


@dataclass
class TrainOutcome:
    """What the driver gets back from one round of distributed training."""

    best_state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_step: int
    best_val_f1: float
    start_step: int  # > 0 when the last attempt resumed from a checkpoint
    seconds: float


def _save_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path / STATE_FILE)


def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)


def _mean_across_ranks(value: float) -> float:
    """All-reduce mean of a scalar (identity on one worker)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item()) / torch.distributed.get_world_size()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The per-worker loop (Ray Train calls this on every worker with the same ``config``).

    ``config`` keys: ``train`` / ``model`` (config dicts), ``stage`` (:class:`StageParams` dict),
    ``val`` (ValSpec dicts), ``init_state`` (path to a warm-start model.pt or None),
    ``smooth_sigma``, ``threads`` and ``teacher`` (:class:`TeacherConfig` dict, or None: the patches' masks as
    they come). With a teacher, every ignored pixel of a batch gets the teacher's confident label, the
    student learns them from a strong view, and the teacher (an EMA of the student) is what is validated
    and kept; with ``teacher.frozen_from`` the teacher is that model, fixed, and the student is kept.
    """
    import ray.train
    import ray.train.torch

    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(int(config.get("threads") or 1))
    tc = from_dict(TrainConfig, config["train"], "train")
    params = StageParams(**config["stage"])
    model = ray.train.torch.prepare_model(_initial_model(config, tc.seed))
    device = ray.train.torch.get_device()
    amp = resolve_amp(tc.amp, device.type)  # as cryopick train: bfloat16 where the hardware runs it natively
    core: nn.Module = getattr(model, "module", model)  # the bare UNet inside DDP
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=WEIGHT_DECAY)

    state = _load_state(ray.train.get_checkpoint())
    step, history, rule, best_step, best_state = _resume(state, core, opt)
    tcfg = TeacherConfig(**config["teacher"]) if config.get("teacher") else None
    teacher = _teacher(core, state, device, tcfg.frozen_from) if tcfg else None
    frozen = tcfg is not None and tcfg.frozen_from is not None  # a fixed teacher: the student is validated and kept
    kept: nn.Module = teacher if teacher is not None and not frozen else core  # the weights validated and written
    gen = torch.Generator().manual_seed(tc.seed * 7919 + rank * 104729 + step)
    start_step = step
    val_items = load_val_items(config["val"], params) if rank == 0 and config["val"] else []
    if state is None and (config.get("init_state") or frozen) and val_items:
        # a warm start (or a fresh round's fixed teacher: the previous model) competes as step 0: on the same labels
        # as the floor, with new ones as an ordinary checkpoint
        start = teacher if frozen and teacher is not None else kept
        res = evaluate(start, val_items, params.diameter, config.get("smooth_sigma", 1.0), fractions=(0.6,))
        rule.start(res.f1, _n_true(res), floor=config.get("warm_floor", True), ap=res.average_precision)
        best_step, best_state = 0, _cpu_copy(start)
        history.append({"step": 0, "loss": float("nan"), "seconds": 0.0, "val_f1": res.f1, "val_ap": res.average_precision})

    shard = ray.train.get_dataset_shard("train")
    t0, running, reported_at = time.monotonic(), [], -1
    taught = np.zeros(3)  # teacher-labeled pixels since the last report: particle, background, all it was asked
    while step < tc.steps:
        seen = 0
        batches = shard.iter_batches(
            batch_size=tc.batch_size, batch_format="numpy", drop_last=True,
            local_shuffle_buffer_size=tc.batch_size * SHUFFLE_BUFFER_BATCHES,
        )
        for batch in batches:
            seen += 1
            for group in opt.param_groups:
                group["lr"] = lr_at(step, tc.steps, tc.lr)
            images = torch.from_numpy(np.ascontiguousarray(batch["image"][:, None], dtype=np.float32)).to(device)
            masks = torch.from_numpy(np.ascontiguousarray(batch["mask"][:, None], dtype=np.int8)).to(device)
            if teacher is not None and tcfg is not None:
                images, masks = _teach(teacher, images, masks, tcfg, gen, taught, amp)
            running.append(train_step(model, opt, images, masks, amp=amp, prior=params.prior))
            if teacher is not None and tcfg is not None and not frozen:
                ema_update(teacher, core, tcfg.ema)
            step += 1
            if step % tc.val_every == 0 or step == tc.steps:
                row = {"step": step, "loss": _mean_across_ranks(float(np.mean(running))), "seconds": time.monotonic() - t0}
                if teacher is not None:
                    row.update(_taught_shares(taught))
                    taught[:] = 0
                running = []
                if rank == 0:
                    keep = _validate(kept, val_items, params.diameter, config.get("smooth_sigma", 1.0), rule, row)
                    if keep or best_state is None:
                        best_step, best_state = step, _cpu_copy(kept)
                    history.append(row)
                    print(f"[cryopick train] step {step}/{tc.steps} loss {row['loss']:.4f} val_f1 {row.get('val_f1', float('nan')):.3f}", flush=True)
                _report(rank, row, step, start_step, core, opt, history, rule, best_step, best_state, teacher)
                reported_at = step
            if step >= tc.steps:
                break
        if seen == 0:
            raise RuntimeError("the training Dataset shard yielded no full batch: raise selftrain.patches_per_epoch")
    if reported_at != step:  # resumed at the end: report the finished state once more
        _report(rank, {"step": step, "loss": float("nan")}, step, start_step, core, opt, history, rule, best_step, best_state, teacher)


def _teacher(core: nn.Module, state: dict[str, Any] | None, device: torch.device, frozen_from: str | None = None) -> nn.Module:
    """The EMA teacher: the student's starting weights, or the teacher of the checkpoint being resumed; with
    ``frozen_from``, that model.pt's weights, fixed for the whole round."""
    teacher = make_teacher(core)
    if frozen_from is not None:
        teacher.load_state_dict(_model_weights(frozen_from))
    elif state is not None and state.get("teacher") is not None:
        teacher.load_state_dict(state["teacher"])
    return teacher.to(device)


def _teach(teacher: nn.Module, images: torch.Tensor, masks: torch.Tensor, cfg: TeacherConfig, gen: torch.Generator,
           taught: np.ndarray, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch the student trains on: patches with ignored pixels get the teacher's labels and a strong view.

    ``taught`` accumulates (particle, background, asked) pixel counts of the teacher's labels; with ``amp`` the
    teacher's forward pass runs under bfloat16 autocast, as the student's does.
    """
    open_ = (masks == IGNORE).flatten(1).any(1)
    if not bool(open_.any()):
        return images, masks
    idx = open_.nonzero().flatten()
    asked = masks[idx] == IGNORE
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=amp):
        if cfg.labeler is not None:
            filled = _labeler_targets(teacher, images[idx], masks[idx], cfg)
        else:
            filled = teacher_targets(teacher, images[idx], masks[idx], cfg.positive, cfg.negative)
    taught += [float((filled[asked] == 1).sum()), float((filled[asked] == 0).sum()), float(asked.sum())]
    strong, filled = strong_view(images[idx], filled, gen, cfg.strength)
    images, masks = images.clone(), masks.clone()
    images[idx], masks[idx] = strong, filled
    return images, masks


@torch.no_grad()
def _labeler_targets(teacher: nn.Module, images: torch.Tensor, masks: torch.Tensor, cfg: TeacherConfig) -> torch.Tensor:
    """The teacher's heatmaps of a batch through the campaign's pseudo-label rule, patch by patch; expert labels win."""
    labeler = PseudoLabeler(**(cfg.labeler or {}))
    heat = teacher(images)[:, 0].float().cpu().numpy()
    guess = np.stack([labeler.mask(h, cfg.diameter, cfg.scale) for h in heat])[:, None]
    guess_t = torch.from_numpy(guess).to(masks.device)
    return torch.where(masks == IGNORE, guess_t, masks)


def _taught_shares(taught: np.ndarray) -> dict[str, float]:
    """Shares of the pixels the teacher was asked about that it labeled particle / background (mean over ranks)."""
    asked = max(_mean_across_ranks(float(taught[2])), 1.0)
    return {"teacher_positive": _mean_across_ranks(float(taught[0])) / asked,
            "teacher_negative": _mean_across_ranks(float(taught[1])) / asked}


def _initial_model(config: dict[str, Any], seed: int) -> nn.Module:
    """The U-Net before DDP: the same seeded weights on every rank, or the warm start's."""
    torch.manual_seed(seed)
    model = build_unet(from_dict(ModelConfig, config["model"], "model"))
    if config.get("init_state"):
        model.load_state_dict(_model_weights(config["init_state"]))
    return model


def _model_weights(path: str) -> dict[str, torch.Tensor]:
    """The U-Net weights of a picker's model.pt (a previous round's model: a warm start or a fixed teacher)."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _validate(core: nn.Module, val_items: list[Any], diameter: float, smooth_sigma: float, rule: CheckpointRule,
              row: dict[str, float]) -> bool:
    """Rank 0: score the weights into ``row``; True when the checkpoint rule keeps them (always, without validation)."""
    if not val_items:
        return True
    res = evaluate(core, val_items, diameter, smooth_sigma, fractions=(0.6,))
    row.update(val_f1=res.f1, val_ap=res.average_precision)
    return rule.offer(res.f1, _n_true(res), res.average_precision)


def _cpu_copy(core: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}


def _resume(state: dict[str, Any] | None, core: nn.Module, opt: torch.optim.Optimizer
            ) -> tuple[int, list[dict[str, float]], CheckpointRule, int, dict[str, torch.Tensor] | None]:
    """(step, history, rule, best step, best weights): from a checkpoint after a restart, else from scratch."""
    if state is None:
        return 0, [], CheckpointRule(), 0, None
    core.load_state_dict(state["model"])  # a restart after a failure (or a rerun of an interrupted round)
    opt.load_state_dict(state["optimizer"])
    rule = CheckpointRule(float(state["best_f1"]), float(state.get("top_f1", state["best_f1"])), float(state.get("floor", -1.0)),
                          float(state.get("floor_ap", -1.0)))
    return int(state["step"]), list(state["history"]), rule, int(state["best_step"]), state["best_state"]


def _n_true(res: ValResult) -> int:
    return res.curve.n_true if res.curve is not None else 0


def _report(
    rank: int, row: dict[str, float], step: int, start_step: int, core: torch.nn.Module, opt: torch.optim.Optimizer,
    history: list[dict[str, float]], rule: CheckpointRule, best_step: int, best_state: dict[str, torch.Tensor] | None,
    teacher: nn.Module | None = None,
) -> None:
    """All ranks report; rank 0 attaches the checkpoint (the others must still call report)."""
    import ray.train

    metrics = {**row, "start_step": start_step, "best_step": best_step, "pid": os.getpid()}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="cryopick-ckpt-") as tmp:
        _save_state(Path(tmp), {
            "model": {k: v.detach().cpu() for k, v in core.state_dict().items()},
            "optimizer": copy.deepcopy(opt.state_dict()), "step": step, "history": history,
            "best_f1": rule.kept_f1, "top_f1": rule.top_f1, "floor": rule.floor, "floor_ap": rule.floor_ap, "best_step": best_step, "best_state": best_state,
            "teacher": _cpu_copy(teacher) if teacher is not None else None,
        })
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


@dataclass
class TrainSpec:
    """Resources and storage of one distributed training run."""

    num_workers: int = 2
    use_gpu: bool = False
    cpu_per_worker: float = 0.5
    max_failures: int = 2
    storage_path: str = ""
    name: str = "train"


def fit(
    dataset: Any,
    loop_config: dict[str, Any],
    spec: TrainSpec,
) -> TrainOutcome:
    """Run ``TorchTrainer`` on ``dataset`` and return the best weights and the history.

    Reusing ``spec.name`` under the same ``spec.storage_path`` resumes that run from its last
    checkpoint (how an interrupted round picks up where it stopped).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    t0 = time.monotonic()
    resources = {"CPU": spec.cpu_per_worker}
    if spec.use_gpu:
        resources["GPU"] = 1
    loop_config = {**loop_config, "threads": max(1, int(round(spec.cpu_per_worker)))}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=spec.name, storage_path=spec.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            worker_runtime_env={"env_vars": dict(CPU_ENV)},  # type: ignore[call-arg]  # Train v2 RunConfig; mypy sees v1's
            # (the env applies before torch loads in the worker)
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    state = _load_state(result.checkpoint)
    if state is None or state["best_state"] is None:
        raise RuntimeError(f"training run {spec.name} finished without a checkpoint")
    metrics = result.metrics or {}
    return TrainOutcome(
        best_state=state["best_state"], history=state["history"], best_step=int(state["best_step"]),
        best_val_f1=float(state["best_f1"]), start_step=int(metrics.get("start_step", 0)),
        seconds=time.monotonic() - t0,
    )


def loop_config(train: TrainConfig, model: ModelConfig, stage: StageParams, val: list[dict[str, Any]],
                init_state: str | None, smooth_sigma: float = 1.0, teacher: TeacherConfig | None = None,
                warm_floor: bool = True) -> dict[str, Any]:
    """The ``train_loop_config`` dict (plain data only, so it pickles to any node).

    ``warm_floor``: the ``init_state`` weights are the checkpoint rule's floor (False: an ordinary checkpoint at step 0).
    """
    return {"train": asdict(train), "model": asdict(model), "stage": asdict(stage), "val": val,
            "init_state": init_state, "smooth_sigma": smooth_sigma, "teacher": asdict(teacher) if teacher else None,
            "warm_floor": warm_floor}
