"""The training loss: pixel-wise BCE over the labeled pixels of a {-1, 0, 1} target mask.

The one place to change or add a loss; :func:`cryopick.training.loop.train_step` calls it on
every worker (single process and Ray Train alike).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Pixel-wise binary cross-entropy averaged over non-ignored pixels.

    loss = mean over {target >= 0} of -[w * t * log p + (1 - t) * log(1 - p)], p = sigmoid(logits),
    computed from logits for numerical stability. Returns 0 (with a gradient) when every pixel
    is ignored, so a fully ignored batch cannot produce NaN.

    Args:
        logits: (B, 1, H, W) or any shape matching ``target``.
        target: same shape, values in {-1, 0, 1}.
    """
    target = target.to(logits.dtype)
    valid = target >= 0
    t = target.clamp(min=0.0)
    weight = torch.where(t > 0, torch.full_like(t, pos_weight), torch.ones_like(t)) * valid
    loss = F.binary_cross_entropy_with_logits(logits, t, weight=weight, reduction="sum")
    return loss / valid.sum().clamp(min=1)
