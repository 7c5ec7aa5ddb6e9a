"""Single-process training: random patches, AdamW, periodic validation, best checkpoint kept.

``train_step`` and ``evaluate`` are the pieces Ray Train reuses on each worker.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cryopick.inference.border import outside_band
from cryopick.config import MIN_DISTANCE_FRACTIONS, PickConfig, TrainConfig
from cryopick.training.dataset import TrainItem, ValItem
from cryopick.io.atomic import atomic_write
from cryopick.training.checkpoint import CheckpointRule
from cryopick.training.loss import masked_bce
from cryopick.evaluation.metrics import (
    CANDIDATE_FLOOR, SPARSE_SHARE, PRCurve, average_precision, best_threshold, for_sparse_picks, in_strip, judged_share,
    centre_within_noise, lowest_within_noise, picked_share, pooled_curve, sparse_note,
)
from cryopick.model.unet import build_unet
from cryopick.training.patches import sample_patches
from cryopick.runtime import resolve_amp
from cryopick.inference.peaks import find_peaks, mean_max_near
from cryopick.inference.picker import PickerMeta, save_picker
from cryopick.inference.tiling import predict_heatmap, resolve_device

WEIGHT_DECAY = 1e-4  # AdamW
POS_WEIGHT = 1.0  # BCE weight of particle pixels
INTENSITY_AUGMENT = 0.5  # share of patches given contrast/blur/noise jitter (docs/design.md)
CONFIDENT_PARTICLE = 0.95  # background pixels the model calls particle above this p are ignored (docs/design.md)
VAL_CONTEXT = 64  # binned px of image around a scored strip that validation predicts: context for its edge rows


@dataclass
class ValResult:
    """Validation picks scored at the best threshold and peak distance."""

    f1: float
    threshold: float
    min_distance: float  # original px
    average_precision: float
    curve: PRCurve | None = None
    by_min_distance: dict[float, float] = field(default_factory=dict)
    sparse: bool = False  # scored against the estimated particle count (sparse picks)
    picked_share: float = 1.0  # share of the particles the expert picked, as estimated (labels auto)


@dataclass
class TrainResult:
    meta: PickerMeta
    val: ValResult | None
    history: list[dict[str, float]]
    best_step: int
    seconds: float
    model: nn.Module


def lr_at(step: int, total: int, base_lr: float, warmup: int | None = None) -> float:
    """Linear warm-up then cosine decay to 1 % of ``base_lr``."""
    warmup = warmup if warmup is not None else max(1, total // 20)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    pos_weight: float = POS_WEIGHT,
    amp: bool = False,
    prior: float = 0.0,
    confident: float | None = CONFIDENT_PARTICLE,
) -> float:
    """One optimisation step on a batch: images (B, 1, P, P) float, masks (B, 1, P, P) in {-3, -2, -1, 0, 1}.

    With ``amp`` the forward pass runs under bfloat16 autocast (weights and loss stay float32). ``prior``: share
    of the unpicked pixels (-3) that are particle; background pixels the model calls particle with p above
    ``confident`` are ignored (:func:`cryopick.training.loss.masked_bce`).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(images, return_logits=True)
    loss = masked_bce(logits.float(), masks, pos_weight, prior, confident)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def evaluate(
    model: nn.Module,
    val_items: Sequence[ValItem],
    diameter: float,
    smooth_sigma: float,
    fractions: Sequence[float] = MIN_DISTANCE_FRACTIONS,
    pick_cfg: PickConfig | None = None,
    border: float = 0.0,
    labels: str = "complete",
    expected: float | None = None,
) -> ValResult:
    """Pick the validation micrographs and find the best threshold and peak distance.

    Matching radius is half the diameter; each item is scored only inside its ``rows``, and
    picks closer than ``border`` original px to the micrograph's edge are dropped, as at picking.
    ``labels``: ``sparse`` (the expert picked some of the particles) takes precision against the estimated
    particle count (:func:`cryopick.evaluation.metrics.for_sparse_picks`), and so does ``auto``: with
    complete picks and enough of them that count is within a few per cent of the picks and the threshold stays
    (EMPIAR-10017), while picks that leave particles out (EMPIAR-10028's expert, or a user's few) get the
    threshold they need (docs/selftrain.md). ``sparse`` in the result says whether the picks look sparse:
    :func:`~cryopick.evaluation.metrics.judged_share` of the Wilson-bounded picked share and the model's mean
    peak at the validation picks below ``SPARSE_SHARE`` (``auto``), or ``labels`` says so. ``expected``: the
    particles a micrograph holds, as the user said; the sparse precision then counts that many per micrograph, in
    proportion to the scored area.
    """
    core = getattr(model, "module", model)
    heatmaps = [scored_heatmap(core, v, pick_cfg) for v in val_items]
    allowed = [outside_band(v.image.shape, (v.scale, v.scale), v.original_shape, border) for v in val_items]
    curves: list[tuple[float, PRCurve]] = []
    for frac in fractions:
        per_mic = []
        for v, hm, ok in zip(val_items, heatmaps, allowed):
            xy, s = find_peaks(hm, frac * diameter / v.scale, CANDIDATE_FLOOR, smooth_sigma, allowed=ok)
            keep, tkeep = in_strip(xy, v.rows, v.cols), in_strip(v.true_xy, v.rows, v.cols)
            # score in original pixels so the radius is the user's half diameter
            per_mic.append((xy[keep] * v.scale, s[keep], v.true_xy[tkeep] * v.scale))
        curves.append((frac * diameter, pooled_curve(per_mic, radius=diameter / 2.0)))
    best = _best_of(curves)
    at_picks = mean_max_near((hm, v.true_xy[in_strip(v.true_xy, v.rows, v.cols)], diameter / 4 / v.scale)
                             for v, hm in zip(val_items, heatmaps))
    share = judged_share(picked_share(best.curve, default=None) if best.curve is not None else None, at_picks)
    if labels in ("sparse", "auto"):
        best = _best_of([(md, for_sparse_picks(c)) for md, c in curves])
        if expected is not None:  # the peak distance as chosen; its threshold against the user's count
            count = expected * sum(_scored_share(v) for v in val_items)
            by_md = best.by_min_distance
            best = _best_of([(md, for_sparse_picks(c, count)) for md, c in curves if md == best.min_distance])
            best.by_min_distance = by_md
    best.sparse = labels == "sparse" or (labels == "auto" and share < SPARSE_SHARE)
    best.picked_share = share
    return best


def scored_heatmap(model: nn.Module, v: ValItem, cfg: PickConfig | None = None) -> np.ndarray:
    """(h, w) heatmap of ``v`` predicted over its scored rows and columns and ``VAL_CONTEXT`` px around them, 0 elsewhere.

    A held-back strip is a fifth of its micrograph, and nothing outside it is scored: predicting only the strip
    with its context costs about a quarter of the whole micrograph, validation after validation. The window's
    edges lie on the U-Net's pooling grid as seen from either end of the micrograph, so the network pads and pools
    the window as it does the whole micrograph.
    """
    h, w = v.image.shape
    g = 2 ** getattr(model, "depth", 0)  # the U-Net's pooling grid
    (y0, y1), (x0, x1) = _on_grid(v.rows, h, g), _on_grid(v.cols or (0, w), w, g)
    if (y0, y1, x0, x1) == (0, h, 0, w):
        return predict_heatmap(model, v.image, cfg)
    out = np.zeros((h, w), dtype=np.float32)
    out[y0:y1, x0:x1] = predict_heatmap(model, np.ascontiguousarray(v.image[y0:y1, x0:x1]), cfg)
    return out


def _on_grid(span: tuple[int, int], n: int, g: int) -> tuple[int, int]:
    """``span`` of an axis of ``n`` px widened by ``VAL_CONTEXT`` and clipped, its ends a multiple of ``g`` from either end
    of the axis (same padding and pooling as the whole axis)."""
    lo, hi = span
    return max(0, lo - VAL_CONTEXT) // g * g, n - max(0, n - hi - VAL_CONTEXT) // g * g


def _scored_share(v: ValItem) -> float:
    """Share of a validation micrograph's area that is scored (its strip or region)."""
    h, w = v.image.shape
    (r0, r1), (c0, c1) = v.rows, v.cols or (0, w)
    return max(0, min(r1, h) - max(r0, 0)) * max(0, min(c1, w) - max(c0, 0)) / float(h * w)


def _best_of(curves: Sequence[tuple[float, PRCurve]]) -> ValResult:
    """The (peak distance, curve) pair with the highest best-threshold F1 (the first among ties), as a ValResult."""
    best: ValResult | None = None
    by_md: dict[float, float] = {}
    for md, curve in curves:
        f1, thr = best_threshold(curve)
        by_md[md] = f1
        if best is None or f1 > best.f1:
            best = ValResult(f1, thr, md, average_precision(curve), curve)
    assert best is not None
    best.by_min_distance = by_md
    return best


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "step", k))
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _new_model(meta: PickerMeta, init_state: dict[str, Any] | None, dev: torch.device) -> nn.Module:
    """The U-Net to train, on ``dev``, channels-last (oneDNN's and cuDNN's fast layout), from ``init_state`` if given."""
    model = build_unet(meta.model)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device=dev, memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted at run time; torch's stubs omit it
    return model


def _validate(model: nn.Module, val_items: Sequence[ValItem], meta: PickerMeta, rule: CheckpointRule, row: dict[str, float]) -> bool:
    """Score the current weights into ``row``; True when the checkpoint rule keeps them (always, without validation)."""
    if not val_items:
        return True
    res = evaluate(model, val_items, meta.diameter, meta.smooth_sigma, fractions=(0.6,), border=meta.border)
    row.update(val_f1=res.f1, val_ap=res.average_precision)
    return rule.offer(res.f1, res.curve.n_true if res.curve is not None else 0)


def train_picker(
    train_items: Sequence[TrainItem],
    val_items: Sequence[ValItem],
    meta: PickerMeta,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    init_state: dict[str, Any] | None = None,
    progress: bool = True,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
    *,
    device: str = "auto",
    threads: int | None = None,
    max_minutes: float | None = None,
    labels: str = "auto",
    prior: float = 0.0,
    expected: float | None = None,
) -> TrainResult:
    """Train a U-Net on patches of ``train_items``; keep a checkpoint by :class:`CheckpointRule`.

    The returned ``meta`` carries the threshold and peak distance that maximised F1 on the
    validation items; with ``out_dir`` the picker is saved there as ``model.pt`` with a
    ``history.csv`` of losses and validation scores.

    Args:
        device: auto | cpu | cuda | cuda:N.
        threads: torch CPU threads (None: torch's default).
        max_minutes: stop after this wall time (the best checkpoint so far is kept).
        labels: complete | sparse | auto (sparse when the validation picks look sparse, with a message):
            how the stored threshold is chosen (:func:`evaluate`'s ``sparse``).
        prior: share of the unpicked pixels (mask -3) that are particle (:func:`cryopick.training.loss.masked_bce`).
        expected: particles a micrograph holds, as the user said (None: the sparse count is estimated).
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dev = resolve_device(device)
    model = _new_model(meta, init_state, dev)
    memory_format = torch.channels_last
    use_amp = resolve_amp(cfg.amp, dev.type)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    history: list[dict[str, float]] = []
    rule, best_step, best_state = CheckpointRule(), 0, copy.deepcopy(model.state_dict())
    start = time.monotonic()
    running: list[float] = []
    bar = tqdm(range(cfg.steps), desc="train", unit="step", disable=not progress, mininterval=2.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr)
        images, masks = sample_patches(train_items, cfg.batch_size, cfg.patch, rng, intensity=INTENSITY_AUGMENT)
        x = torch.from_numpy(images).to(dev).contiguous(memory_format=memory_format)
        loss = train_step(model, opt, x, torch.from_numpy(masks).to(dev), POS_WEIGHT, use_amp, prior)
        running.append(loss)
        out_of_time = max_minutes is not None and time.monotonic() - start > max_minutes * 60
        last = step == cfg.steps - 1 or out_of_time
        if (step + 1) % cfg.val_every == 0 or last:
            row: dict[str, float] = {"step": step + 1, "loss": float(np.mean(running)), "seconds": time.monotonic() - start}
            running = []
            if _validate(model, val_items, meta, rule, row):
                best_step, best_state = step + 1, copy.deepcopy(model.state_dict())
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", val_f1=f"{row.get('val_f1', float('nan')):.3f}")
            if on_validation is not None:
                on_validation(step + 1, row)
        if out_of_time:
            break
    bar.close()
    model.load_state_dict(best_state)
    val = _choose_picking(model, val_items, meta, labels, expected=expected)  # the sparse note prints even without a progress bar
    if out_dir is not None:
        save_picker(Path(out_dir), model, meta)
        write_history(Path(out_dir) / "history.csv", history)
    return TrainResult(meta=meta, val=val, history=history, best_step=best_step, seconds=time.monotonic() - start, model=model)


def _choose_picking(model: nn.Module, val_items: Sequence[ValItem], meta: PickerMeta, labels: str = "complete",
                    say: bool = True, expected: float | None = None) -> ValResult | None:
    """Store in ``meta`` the peak distance that maximises F1 on validation and the threshold in the middle of those
    whose F1 there is within sampling noise of the best (:func:`~cryopick.evaluation.metrics.centre_within_noise`;
    for sparse picks the lowest of them, :func:`~cryopick.evaluation.metrics.lowest_within_noise`); None: no
    validation.

    With sparse labels (``labels``, or ``auto`` and an estimated picked share below ``SPARSE_SHARE``) F1 is
    taken against the particle count: ``expected`` (the particles a micrograph holds, as the user said) sets it,
    else it is estimated from the validation picks.
    """
    if not val_items:
        return None
    val = evaluate(model, val_items, meta.diameter, meta.smooth_sigma, border=meta.border, labels=labels, expected=expected)
    if val.curve is not None:
        val.f1, val.threshold = (lowest_within_noise if val.sparse else centre_within_noise)(val.curve)
    if val.sparse and labels == "auto" and say:
        print(sparse_note(val.picked_share, "the threshold is set for sparse picks"))
    meta.threshold, meta.min_distance, meta.val_f1 = val.threshold, val.min_distance, val.f1
    return val
