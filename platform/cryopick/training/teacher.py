"""Teacher–student self-training pieces: an EMA teacher, its thresholded targets, the student's strong view.

A self-training round (``selftrain.method: teacher``) trains a student on every batch: expert-labeled
patches with their masks, and patches of unlabeled micrographs (and, with sparse labels, the unpicked
pixels of labeled ones) with the targets an exponential moving average of the student (the teacher)
gives on the weak view — the patch as cut, flipped and rotated. The student sees a strongly perturbed
view of the same pixels (noise, blur, contrast, cut-out), so it must learn what the teacher is sure of
from a harder input (FixMatch's confidence rule, mean-teacher weights, applied online on every batch).

Plain torch functions of tensors; :mod:`cryopick.distributed.train_loop` calls them on every DDP worker
(each holds its own teacher: the student's weights are identical on every rank, so the teachers are too).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cryopick.preprocessing.labels import IGNORE

# The teacher averages the student over about 1 / (1 - EMA_DECAY) = 100 steps: slow enough to smooth the
# student's step-to-step noise, fast enough to follow it within a round of a few hundred steps.
EMA_DECAY = 0.99


@dataclass
class TeacherConfig:
    """What the online teacher–student fit needs (plain data, sent to every worker).

    Attributes:
        positive: teacher p above this -> particle target.
        negative: teacher p below this -> background target; in between ignored.
        ema: teacher <- ema * teacher + (1 - ema) * student after every step (:data:`EMA_DECAY`).
        strength: scale of the strong perturbation (0: the student sees the weak view).
        labeler: fields of a :class:`cryopick.selftrain.pseudo.PseudoLabeler` that turns the teacher's
            heatmap of a patch into targets (calibrated probabilities, particle disks at confident peaks);
            None: the bare rule on the teacher's raw probabilities (:func:`teacher_targets`).
        diameter: particle diameter, original px; scale: original px per binned px (for ``labeler``).
        frozen_from: a model.pt whose weights are a fixed teacher (a fresh round, ``selftrain.warm_start: false``:
            the student starts from random weights, the previous round's model labels for it and does not move,
            and the student is what is validated and kept; Noisy Student's scheme). None: the EMA teacher.
    """

    positive: float = 0.95
    negative: float = 0.05
    ema: float = EMA_DECAY
    strength: float = 1.0
    labeler: dict[str, Any] | None = None
    diameter: float = 0.0
    scale: float = 1.0
    frozen_from: str | None = None


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of the student (eval mode, no gradients): the teacher starts where the student starts."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher = decay * teacher + (1 - decay) * student for parameters; buffers (BatchNorm statistics) are copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for tb, sb in zip(teacher.buffers(), student.buffers()):
        tb.copy_(sb)


@torch.no_grad()
def teacher_targets(teacher: nn.Module, images: torch.Tensor, masks: torch.Tensor, positive: float, negative: float) -> torch.Tensor:
    """Fill the ignored pixels of ``masks`` with the teacher's confident labels on ``images`` (the weak view).

    Args:
        images: (B, 1, P, P) float.
        masks: (B, 1, P, P) int8 in {-1, 0, 1}; expert labels (0/1) are kept as they are.

    Returns:
        (B, 1, P, P) int8: expert labels where given, else 1 where p > positive, 0 where p < negative, -1 elsewhere.
    """
    p = teacher(images)
    guess = torch.full_like(masks, IGNORE)
    guess[p > positive] = 1
    guess[p < negative] = 0
    return torch.where(masks == IGNORE, guess, masks)


def strong_view(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, strength: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's view: per patch contrast and offset, Gaussian blur, added noise and one cut-out square.

    Images are normalised (mean 0, std 1), so the ranges are in units of the micrograph's standard
    deviation. Pixels under the cut-out show nothing to learn from: their targets become ignored.

    Args:
        images: (B, 1, P, P) float.
        masks: (B, 1, P, P) int8.
        generator: CPU generator (reproducible draws on any device).

    Returns:
        (images, masks), both (B, 1, P, P).
    """
    if strength <= 0:
        return images, masks
    b, _, h, w = images.shape
    dev = images.device

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    gain = 1.0 + strength * (draw(b, 1, 1, 1) * 0.8 - 0.4)  # contrast 0.6-1.4
    offset = strength * (draw(b, 1, 1, 1) * 0.6 - 0.3)
    out = images * gain + offset
    sigma = strength * draw(b) * 1.5  # blur up to 1.5 px
    out = _blur(out, sigma)
    noise = strength * draw(b, 1, 1, 1) * 0.5
    out = out + noise * torch.randn(out.shape, generator=generator).to(dev)
    masks = masks.clone()
    side = max(1, int(round(min(h, w) * 0.25 * min(strength, 2.0))))
    ys = (draw(b) * (h - side + 1)).long().tolist()
    xs = (draw(b) * (w - side + 1)).long().tolist()
    for i, (y, x) in enumerate(zip(ys, xs)):
        out[i, :, y : y + side, x : x + side] = 0.0
        masks[i, :, y : y + side, x : x + side] = IGNORE
    return out, masks


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with one sigma per patch (sigma < 0.3 px leaves a patch as it is); (B, 1, P, P) -> same."""
    radius = 4
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    s = sigma.to(images.dtype).clamp(min=1e-3)[:, None]
    k1 = torch.exp(-0.5 * (x[None] / s) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    k1 = torch.where((sigma < 0.3)[:, None], (x == 0).to(images.dtype)[None], k1)
    b = images.shape[0]
    flat = images.transpose(0, 1)  # (1, B, P, P): one group per patch
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), k1[:, None, None, :], groups=b)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), k1[:, None, :, None], groups=b)
    return flat.transpose(0, 1).contiguous()
